namespace FlexGen.Tensors.Layers;

/// <summary>
/// How to generate, per request: how many tokens, how each is chosen (<see cref="SamplingOptions"/>) and when a sequence
/// stops (<see cref="StopTokens"/>). The one description the host service, the actor protocol and the reference
/// generator share; requests with equal settings may share GPU batches.
/// </summary>
public sealed record GenerationSettings
{
    /// <param name="genLen">New tokens per sequence (FlexGen's <c>gen_len</c>), >= 1.</param>
    public GenerationSettings(int genLen) => GenLen = genLen;

    /// <summary>New tokens per sequence (FlexGen's <c>gen_len</c>).</summary>
    public int GenLen
    {
        get;
        init => field = value >= 1
            ? value
            : throw new ArgumentOutOfRangeException(nameof(GenLen), value, $"{nameof(GenerationSettings)}.{nameof(GenLen)} must be >= 1.");
    }

    public SamplingOptions Sampling
    {
        get;
        init => field = value
            ?? throw new ArgumentNullException(nameof(Sampling), $"{nameof(GenerationSettings)}.{nameof(Sampling)} must not be null (greedy: SamplingOptions.Greedy).");
    } = SamplingOptions.Greedy;

    /// <summary>FlexGen's <c>stop</c>: a sequence that emits this token stops; its later positions hold the pad id. Null: never stop.</summary>
    public int? StopTokenId
    {
        get;
        init => field = value is null or >= 0
            ? value
            : throw new ArgumentOutOfRangeException(nameof(StopTokenId), value, $"{nameof(GenerationSettings)}.{nameof(StopTokenId)} must be a token id (>= 0).");
    }
}
