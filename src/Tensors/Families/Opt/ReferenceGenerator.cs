namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// How a <see cref="ReferenceGenerator"/> run computes, beside what it generates (<see cref="GenerationSettings"/>):
/// the compute dtype, the pipeline features it mimics, and whether to keep the logits.
/// </summary>
public sealed record ReferenceRun
{
    public ReferenceRun(ComputeSettings compute)
    {
        ArgumentNullException.ThrowIfNull(compute);
        Compute = compute;
    }

    public ComputeSettings Compute { get; }

    /// <summary>FlexGen's <c>attn_sparsity</c> for decode attention: 1 is dense.</summary>
    public double AttnSparsity { get; init; } = 1.0;

    /// <summary>
    /// The dtype the KV cache is kept in; null: the compute dtype (exact). Float16 mimics a pipeline that stores
    /// the cache as FlexGen does.
    /// </summary>
    public ScalarType? CacheDtype { get; init; }

    /// <summary>Keep the float32 logits (batch, vocab) of every step in the result.</summary>
    public bool KeepLogits { get; init; }
}

/// <summary>Output ids (n, gen_len) int64 and, when asked for, the logits of each step. Owns its tensors.</summary>
public sealed class ReferenceGeneration(Tensor outputIds, IReadOnlyList<Tensor> stepLogits) : IDisposable
{
    public Tensor OutputIds { get; } = outputIds;

    /// <summary>Per step, (n, vocab) float32; empty unless <see cref="ReferenceRun.KeepLogits"/>.</summary>
    public IReadOnlyList<Tensor> StepLogits { get; } = stepLogits;

    public void Dispose()
    {
        OutputIds.Dispose();
        foreach (var logits in StepLogits)
        {
            logits.Dispose();
        }
    }
}

/// <summary>
/// The plain OPT generator: no actors, no offloading, every tensor on the device of the prompt, the KV cache in
/// the compute dtype. It is the oracle the pipeline is checked against, and runs exactly FlexGen's per-layer
/// math: InputEmbed, per block SelfAttention (prefill, then decode over the cache) and Mlp, OutputEmbed.
/// </summary>
public static class ReferenceGenerator
{
    /// <summary>
    /// Generates <see cref="GenerationSettings.GenLen"/> tokens for each of the n prompts <paramref name="promptIds"/>
    /// (n, prompt_len) int64, left-padded. <paramref name="attentionMask"/> (n, prompt_len), nonzero = real token;
    /// null derives it as promptIds != config.PadTokenId (FlexGen).
    /// </summary>
    public static ReferenceGeneration Generate(
        OptWeights weights, Tensor promptIds, Tensor? attentionMask, GenerationSettings generation, ReferenceRun run)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(generation);
        ArgumentNullException.ThrowIfNull(run);
        LayerMath.CheckRank(promptIds, 2, nameof(promptIds), "(n, prompt_len)");
        var config = weights.Config;
        var device = promptIds.device;
        var compute = run.Compute;
        compute.EnsureSupportedOn(device);
        long n = promptIds.shape[0], promptLen = promptIds.shape[1];
        int genLen = generation.GenLen;
        if (!config.Fits(promptLen, genLen))
        {
            throw new ArgumentException(
                $"prompt_len {promptLen} + gen_len {genLen} - 1 positions exceed {config.Name}'s max_seq_len {config.MaxSeqLen}.", nameof(promptIds));
        }

        if (attentionMask is not null && !attentionMask.shape.SequenceEqual(promptIds.shape))
        {
            throw new ArgumentException(
                $"attentionMask shape ({string.Join(", ", attentionMask.shape)}) differs from promptIds ({string.Join(", ", promptIds.shape)}).",
                nameof(attentionMask));
        }

        int nHead = config.NHead;
        long rows = n * nHead, headDim = config.InputDim / nHead;
        long cacheLen = promptLen + genLen - 1;

        using var scope = NewDisposeScope();
        var ids = promptIds.to(ScalarType.Int64);
        var mask = attentionMask is null ? ids.ne(config.PadTokenId) : attentionMask.to(device).ne(0); // (n, s) bool
        var keyCache = new Tensor[config.NumHiddenLayers];
        var valueCache = new Tensor[config.NumHiddenLayers];
        for (var l = 0; l < config.NumHiddenLayers; l++)
        {
            var cacheDtype = run.CacheDtype ?? compute.Dtype;
            keyCache[l] = torch.zeros([cacheLen, rows, headDim], cacheDtype, device); // (s, n*heads, d)
            valueCache[l] = torch.zeros([cacheLen, rows, headDim], cacheDtype, device);
        }

        using var generator = generation.Sampling.Seed is { } seed && !generation.Sampling.IsGreedy ? new Generator(seed, device) : null;
        var stopped = torch.zeros([n, 1], ScalarType.Bool, device);
        var outputs = new List<Tensor>(genLen);
        var logitsPerStep = new List<Tensor>();
        var inputIds = ids;

        for (var step = 0; step < genLen; step++)
        {
            using var stepScope = NewDisposeScope();
            if (step > 0)
            {
                mask = torch.cat([mask, torch.ones([n, 1], ScalarType.Bool, device)], 1).MoveToOuterDisposeScope();
            }

            var hidden = InputEmbed.Forward(inputIds, mask, weights.InputEmbed, compute);
            for (var l = 0; l < config.NumHiddenLayers; l++)
            {
                using var attention = step == 0
                    ? SelfAttention.Prefill(hidden, mask, weights.Attention[l], nHead, compute)
                    : SelfAttention.Decode(hidden, mask, weights.Attention[l], nHead, keyCache[l], valueCache[l], compute,
                        run.AttnSparsity);
                long at = step == 0 ? 0 : promptLen + step - 1;
                keyCache[l].narrow(0, at, attention.NewKey.shape[0]).copy_(attention.NewKey);
                valueCache[l].narrow(0, at, attention.NewValue.shape[0]).copy_(attention.NewValue);
                hidden = Mlp.Forward(attention.Hidden, weights.Mlp[l], compute);
            }

            var logits = OutputEmbed.Logits(hidden, weights.OutputEmbed, compute);
            if (run.KeepLogits)
            {
                logitsPerStep.Add(logits.to(ScalarType.Float32).DetachFromDisposeScope());
            }

            var next = TokenChoice.Select(logits, generation.Sampling, generator);
            if (generation.StopTokenId is { } stop)
            {
                (next, var nowStopped) = StopTokens.Apply(next, stopped, stop, config.PadTokenId);
                stopped = nowStopped.MoveToOuterDisposeScope();
            }

            inputIds = next.MoveToOuterDisposeScope();
            outputs.Add(inputIds);
            if (generation.StopTokenId is not null && stopped.all().item<bool>())
            {
                break; // every sequence stopped: the rest are pads (FlexGen stops its loop here too)
            }
        }

        var outputIds = torch.full([n, genLen], config.PadTokenId, ScalarType.Int64, device);
        outputIds.narrow(1, 0, outputs.Count).copy_(torch.cat(outputs, 1));
        return new ReferenceGeneration(outputIds.DetachFromDisposeScope(), logitsPerStep);
    }
}
