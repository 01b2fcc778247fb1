namespace FlexGen.Tensors.Layers;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// How the next token is chosen from the logits, FlexGen's <c>do_sample</c> and <c>temperature</c>: greedy argmax
/// unless <see cref="DoSample"/> and <see cref="Temperature"/> >= 1e-5, then a draw from softmax(logits / T) restricted
/// to the <see cref="TopK"/> most likely tokens and then to the smallest set whose probability reaches <see cref="TopP"/>
/// (nucleus sampling), the order Hugging Face's logits warpers apply them in. Top-k 1 is greedy.
/// <see cref="Seed"/> makes draws repeatable (a generator seeded with it); null draws from torch's global generator.
/// </summary>
public sealed record SamplingOptions
{
    /// <param name="topK">Keep the k most likely tokens (ties at the k-th kept); null: all. >= 1.</param>
    /// <param name="topP">Keep the most likely tokens until their probability reaches p; null: all. In (0, 1].</param>
    public SamplingOptions(bool doSample = false, double temperature = 1.0, ulong? seed = null, int? topK = null, double? topP = null)
    {
        if (!(temperature >= 0) || double.IsInfinity(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be finite and >= 0.");
        }

        if (topK is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(topK), topK, "topK must be >= 1 (null: no top-k filter).");
        }

        if (topP is { } p && !(p > 0 && p <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(topP), topP, "topP must be in (0, 1] (null: no nucleus filter).");
        }

        DoSample = doSample;
        Temperature = temperature;
        Seed = seed;
        TopK = topK;
        TopP = topP;
    }

    public static SamplingOptions Greedy { get; } = new();

    public bool DoSample { get; }

    public double Temperature { get; }

    public ulong? Seed { get; }

    /// <summary>Only the k most likely tokens may be drawn; null: no limit.</summary>
    public int? TopK { get; }

    /// <summary>Only the smallest most-likely set whose probability reaches p may be drawn; null: no limit.</summary>
    public double? TopP { get; }

    /// <summary>FlexGen: sampling with temperature below 1e-5 is greedy; so is sampling from the top 1.</summary>
    public bool IsGreedy => !DoSample || Temperature < 1e-5 || TopK == 1;
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
            // max's indices, not argmax: both give the first maximal index, and libtorch's CPU argmax over bfloat16 is 5x
            // slower (256 x 50272 logits: 25.5 against 4.5 ms; float32's transposed logits: 41 against 34 ms).
            ids = logits.max(1, keepdim: true).indexes;
        }
        else
        {
            // float32 softmax: bfloat16 probabilities are too coarse for a faithful draw.
            var probs = Probabilities(logits, sampling);
            ids = probs.multinomial(1, false, generator);
        }

        return ids.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The distribution a sampled token is drawn from: softmax(logits / T) (float32, (batch, vocab)) with the tokens
    /// outside the top k, then outside the nucleus of probability p, set to 0 (the rest renormalized).
    /// </summary>
    public static Tensor Probabilities(Tensor logits, SamplingOptions sampling)
    {
        LayerMath.CheckRank(logits, 2, nameof(logits), "(batch, vocab)");
        ArgumentNullException.ThrowIfNull(sampling);
        using var scope = NewDisposeScope();
        var scaled = logits.to(ScalarType.Float32).div(Math.Max(sampling.Temperature, 1e-5));
        long vocab = scaled.shape[1];
        if (sampling.TopK is { } k && k < vocab)
        {
            // The k-th largest per row; everything below it is out (ties with it stay).
            var kth = scaled.topk(k, 1).values.narrow(1, k - 1, 1);
            scaled = scaled.masked_fill(scaled.lt(kth), double.NegativeInfinity);
        }

        if (sampling.TopP is { } p && p < 1)
        {
            var (sorted, order) = scaled.sort(1, descending: true);
            var sortedProbs = sorted.softmax(1);
            // A token is out when the tokens before it already reach p; the most likely one always stays.
            var before = sortedProbs.cumsum(1).sub(sortedProbs);
            var outSorted = before.ge(p);
            var outMask = zeros_like(outSorted).scatter(1, order, outSorted);
            scaled = scaled.masked_fill(outMask, double.NegativeInfinity);
        }

        return scaled.softmax(1).MoveToOuterDisposeScope();
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
