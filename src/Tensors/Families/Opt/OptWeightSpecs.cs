using FlexGen.Tensors.Models;
using TorchSharp;

namespace FlexGen.Tensors.Families.Opt;

/// <summary>
/// The weight tensors of every FlexGen OPT layer, in FlexGen's order (flexllmgen/flex_opt.py <c>init_weight</c>),
/// with FlexGen's file names. <c>h</c> is <see cref="OptConfig.InputDim"/>, as in FlexGen.
/// </summary>
public static class OptWeightSpecs
{
    private const torch.ScalarType StoredDtype = torch.ScalarType.Float16;

    /// <summary>Token embedding (vocab, h) and learned positions (max_seq_len + 2, h).</summary>
    public static IReadOnlyList<WeightSpec> InputEmbed(OptConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.InputDim;
        return
        [
            Spec("decoder.embed_tokens.weight", config.VocabSize, h),
            Spec("decoder.embed_positions.weight", config.MaxSeqLen + 2L, h),
        ];
    }

    /// <summary>q, k, v, out projections (weight (h, h) then bias (h) each) and the attention layer norm.</summary>
    public static IReadOnlyList<WeightSpec> SelfAttention(OptConfig config, int layerIndex)
    {
        CheckLayerIndex(config, layerIndex);
        long h = config.InputDim;
        var p = $"decoder.layers.{layerIndex}.self_attn";
        return [.. Linear(p + ".q_proj", h, h), .. Linear(p + ".k_proj", h, h), .. Linear(p + ".v_proj", h, h),
            .. Linear(p + ".out_proj", h, h), .. LayerNorm(p + "_layer_norm", h)];
    }

    /// <summary>fc1 (ffn, h) + bias, fc2 (h, ffn) + bias, and the final layer norm of block <paramref name="layerIndex"/>.</summary>
    public static IReadOnlyList<WeightSpec> Mlp(OptConfig config, int layerIndex)
    {
        CheckLayerIndex(config, layerIndex);
        long h = config.InputDim;
        long ffn = config.FfnEmbedDim;
        var p = $"decoder.layers.{layerIndex}.";
        return [.. Linear(p + "fc1", ffn, h), .. Linear(p + "fc2", h, ffn), .. LayerNorm(p + "final_layer_norm", h)];
    }

    /// <summary>Self-attention then MLP weights of block <paramref name="layerIndex"/> (FlexGen's joint layer).</summary>
    public static IReadOnlyList<WeightSpec> TransformerLayer(OptConfig config, int layerIndex) =>
        [.. SelfAttention(config, layerIndex), .. Mlp(config, layerIndex)];

    /// <summary>Final layer norm and the (tied) token embedding used as the output projection.</summary>
    public static IReadOnlyList<WeightSpec> OutputEmbed(OptConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.InputDim;
        return [.. LayerNorm("decoder.layer_norm", h), Spec("decoder.embed_tokens.weight", config.VocabSize, h)];
    }

    /// <summary>
    /// The layers in execution order: InputEmbedding, then per block either Attention and Mlp
    /// (<paramref name="sepLayer"/>) or one Block, then OutputEmbedding.
    /// </summary>
    public static IReadOnlyList<LayerSpec> Layers(OptConfig config, bool sepLayer)
    {
        ArgumentNullException.ThrowIfNull(config);
        return LayerSpec.InExecutionOrder(config.NumHiddenLayers, sepLayer, InputEmbed(config),
            i => SelfAttention(config, i), i => Mlp(config, i), OutputEmbed(config));
    }

    private static WeightSpec Spec(string fileName, params long[] shape) => new(fileName, shape, StoredDtype);

    /// <summary>A linear layer's weight (out, in) then bias (out).</summary>
    private static WeightSpec[] Linear(string module, long outFeatures, long inFeatures) =>
        [Spec(module + ".weight", outFeatures, inFeatures), Spec(module + ".bias", outFeatures)];

    /// <summary>A layer norm's weight (a scale: dummy weights around one) then bias.</summary>
    private static WeightSpec[] LayerNorm(string module, long size) => [Norm(module + ".weight", size), Spec(module + ".bias", size)];

    // A layer norm's weight: dummy weights start it near 1.
    private static WeightSpec Norm(string fileName, long size) => new(fileName, [size], StoredDtype, WeightInit.NormScale);

    private static void CheckLayerIndex(OptConfig config, int layerIndex)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (layerIndex < 0 || layerIndex >= config.NumHiddenLayers)
            throw new ArgumentOutOfRangeException(nameof(layerIndex), layerIndex,
                $"Layer index must be in [0, {config.NumHiddenLayers}) for {config.Name} ({config.NumHiddenLayers} layers).");
    }
}
