using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FlexGen.Tensors.Families.Llama;

/// <summary>
/// The plain generator of a Llama-family model: no actors, no offloading, every tensor on the device of the prompt,
/// the whole KV cache in one segment. It runs the family's <see cref="LlamaLayerCompute"/> layer by layer (embed, per
/// block prefill or decode, MLP, output) and is the oracle the pipeline is checked against.
/// </summary>
public static class LlamaReference
{
    /// <summary>Every weight of <paramref name="config"/> read from a model folder (stored dtype), by file name.</summary>
    public static Dictionary<string, Tensor> LoadWeights(LlamaConfig config, string folder)
    {
        ArgumentNullException.ThrowIfNull(config);
        var specs = LlamaWeightSpecs.Layers(config, sepLayer: true).SelectMany(l => l.Weights).DistinctBy(s => s.FileName).ToArray();
        WeightFiles.Check(folder, config.Name, specs);
        return specs.ToDictionary(s => s.FileName, s => WeightFiles.Read(folder, s));
    }

    /// <summary>
    /// Greedy (or sampled) generation of <see cref="GenerationSettings.GenLen"/> tokens for the left-padded prompts
    /// <paramref name="promptIds"/> (n, prompt_len) with <paramref name="attentionMask"/> (n, prompt_len), 1 = real.
    /// Returns the ids (n, gen_len) and, when <paramref name="keepLogits"/>, each step's float32 logits (n, vocab).
    /// </summary>
    /// <param name="cacheDtype">The dtype the KV cache is kept in; null: the compute dtype.</param>
    public static (Tensor OutputIds, IReadOnlyList<Tensor> StepLogits) Generate(
        LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights, Tensor promptIds, Tensor attentionMask,
        GenerationSettings generation, ComputeSettings compute, ScalarType? cacheDtype = null, double attnSparsity = 1.0,
        bool keepLogits = false)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(generation);
        ArgumentNullException.ThrowIfNull(compute);
        LayerMath.CheckRank(promptIds, 2, nameof(promptIds), "(n, prompt_len)");
        var device = promptIds.device;
        long n = promptIds.shape[0], promptLen = promptIds.shape[1];
        int genLen = generation.GenLen;
        if (!config.Fits(promptLen, genLen))
            throw new ArgumentException($"prompt_len {promptLen} + gen_len {genLen} - 1 positions exceed {config.Name}'s max_seq_len {config.MaxSeqLen}.", nameof(promptIds));

        var math = new LlamaLayerCompute(config);
        var layers = LlamaWeightSpecs.Layers(config, sepLayer: true);
        IReadOnlyList<Tensor> Of(LayerSpec layer) => layer.Weights.Select(s => weights[s.FileName]).ToArray();
        long cacheLen = promptLen + genLen - 1, rows = n * config.KvHeads;

        using var scope = NewDisposeScope();
        var mask = attentionMask.to(device).ne(0);
        var caches = layers.Where(l => l.Kind == LayerKind.Attention)
            .Select(_ => (Key: torch.zeros([cacheLen, rows, config.HeadDim], cacheDtype ?? compute.Dtype, device),
                Value: torch.zeros([cacheLen, rows, config.HeadDim], cacheDtype ?? compute.Dtype, device)))
            .ToArray();
        using var generator = generation.Sampling.Seed is { } seed && !generation.Sampling.IsGreedy ? new Generator(seed, device) : null;
        var outputs = new List<Tensor>(genLen);
        var logitsPerStep = new List<Tensor>();
        var inputIds = promptIds.to(ScalarType.Int64);
        for (var step = 0; step < genLen; step++)
        {
            using var stepScope = NewDisposeScope();
            if (step > 0)
                mask = torch.cat([mask, torch.ones([n, 1], ScalarType.Bool, device)], 1).MoveToOuterDisposeScope();

            var hidden = math.Embed(inputIds, mask, Of(layers[0]), compute);
            int block = 0;
            foreach (var layer in layers.Skip(1).SkipLast(1))
            {
                if (layer.Kind == LayerKind.Mlp)
                {
                    hidden = math.Mlp(hidden, Of(layer), compute);
                    continue;
                }

                var (key, value) = caches[block++];
                long past = step == 0 ? 0 : promptLen + step - 1;
                using var attention = step == 0
                    ? math.Prefill(hidden, mask, Of(layer), compute)
                    : math.Decode(hidden, mask, Of(layer), [new CacheSegment(key.narrow(0, 0, past), value.narrow(0, 0, past), compute)],
                        compute, attnSparsity);
                key.narrow(0, past, attention.NewKey.shape[0]).copy_(attention.NewKey);
                value.narrow(0, past, attention.NewValue.shape[0]).copy_(attention.NewValue);
                hidden = attention.Hidden.alias();
            }

            var logits = math.Logits(hidden, Of(layers[^1]), compute);
            if (keepLogits)
                logitsPerStep.Add(logits.to(ScalarType.Float32).DetachFromDisposeScope());
            inputIds = TokenChoice.Select(logits, generation.Sampling, generator).MoveToOuterDisposeScope();
            outputs.Add(inputIds);
        }

        var outputIds = torch.cat(outputs, 1).DetachFromDisposeScope();
        return (outputIds, logitsPerStep);
    }
}
