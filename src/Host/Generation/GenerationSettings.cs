namespace FlexGen.Host.Generation;

/// <summary>How to generate: length, sampling and stopping. Requests with equal settings share GPU batches.</summary>
public sealed record GenerationSettings
{
    /// <summary>New tokens per sequence.</summary>
    public int GenLen
    {
        get;
        init => field = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(GenLen), value, "GenLen must be >= 1.");
    } = 32;

    /// <summary>Sample from softmax(logits / temperature) instead of taking the argmax.</summary>
    public bool DoSample { get; init; }

    public double Temperature
    {
        get;
        init => field = double.IsFinite(value) && value > 0
            ? value
            : throw new ArgumentOutOfRangeException(nameof(Temperature), value, "Temperature must be finite and > 0.");
    } = 1.0;

    /// <summary>Seed of the sampler (sampling only); null: nondeterministic.</summary>
    public long? Seed { get; init; }

    /// <summary>A sequence that emits this token stops; later positions hold the pad id.</summary>
    public long? StopTokenId { get; init; }
}
