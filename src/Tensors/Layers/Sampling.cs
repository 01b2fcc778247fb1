namespace FlexGen.Tensors.Layers;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// How the next token is chosen from the logits, FlexGen's <c>do_sample</c> and <c>temperature</c>: greedy argmax
/// unless <see cref="DoSample"/> and <see cref="Temperature"/> >= 1e-5, then a draw from softmax(logits / T).
/// <see cref="Seed"/> makes draws repeatable (a generator seeded with it); null draws from torch's global generator.
/// </summary>
public sealed record SamplingOptions
{
    public SamplingOptions(bool doSample = false, double temperature = 1.0, ulong? seed = null)
    {
        if (!(temperature >= 0) || double.IsInfinity(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be finite and >= 0.");
        }

        DoSample = doSample;
        Temperature = temperature;
        Seed = seed;
    }

    public static SamplingOptions Greedy { get; } = new();

    public bool DoSample { get; }

    public double Temperature { get; }

    public ulong? Seed { get; }

    /// <summary>FlexGen: sampling with temperature below 1e-5 is greedy.</summary>
    public bool IsGreedy => !DoSample || Temperature < 1e-5;
}

/// <summary>The next token from the logits, as every family chooses it (FlexGen's greedy or sampled choice).</summary>
public static class TokenChoice
{
    /// <summary>
    /// Next token ids (batch, 1) int64 from <paramref name="logits"/> (batch, vocab). Sampling draws from
    /// <paramref name="generator"/> when given (it must live on the logits' device), else from torch's global one.
    /// </summary>
    public static Tensor Select(Tensor logits, SamplingOptions sampling, Generator? generator = null)
    {
        LayerMath.CheckRank(logits, 2, nameof(logits), "(batch, vocab)");
        ArgumentNullException.ThrowIfNull(sampling);
        using var scope = NewDisposeScope();
        Tensor ids;
        if (sampling.IsGreedy)
        {
            ids = logits.argmax(1, keepdim: true);
        }
        else
        {
            // float32 softmax: bfloat16 probabilities are too coarse for a faithful draw.
            var probs = logits.to(ScalarType.Float32).div(sampling.Temperature).softmax(1);
            ids = probs.multinomial(1, false, generator);
        }

        return ids.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The stop-token rule, as FlexGen's <c>store_hidden</c>: a sequence emits its stop token once; every later
/// token of that sequence is the pad token (which is also what it is fed as input next). When every sequence has
/// stopped, generation may end early: the remaining positions are pads either way.
/// </summary>
public static class StopTokens
{
    /// <summary>
    /// Applies the rule to one step: <paramref name="ids"/> (batch, 1) int64 as chosen, <paramref name="stopped"/>
    /// (batch, 1) bool, true for sequences that emitted the stop token at an earlier step. Returns the ids to emit
    /// and the updated stopped flags (new tensors; the inputs are not changed).
    /// </summary>
    public static (Tensor Ids, Tensor Stopped) Apply(Tensor ids, Tensor stopped, long stopTokenId, long padTokenId)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(stopped);
        if (!ids.shape.SequenceEqual(stopped.shape))
        {
            throw new ArgumentException(
                $"stopped shape ({string.Join(", ", stopped.shape)}) differs from ids ({string.Join(", ", ids.shape)}).", nameof(stopped));
        }

        using var scope = NewDisposeScope();
        var emitted = ids.masked_fill(stopped, padTokenId);
        var nowStopped = stopped.logical_or(ids.eq(stopTokenId));
        scope.MoveToOuter(emitted, nowStopped);
        return (emitted, nowStopped);
    }
}
