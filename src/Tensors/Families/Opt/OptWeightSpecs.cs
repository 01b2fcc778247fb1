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
        return
        [
            Spec(p + ".q_proj.weight", h, h),
            Spec(p + ".q_proj.bias", h),
            Spec(p + ".k_proj.weight", h, h),
            Spec(p + ".k_proj.bias", h),
            Spec(p + ".v_proj.weight", h, h),
            Spec(p + ".v_proj.bias", h),
            Spec(p + ".out_proj.weight", h, h),
            Spec(p + ".out_proj.bias", h),
            Norm(p + "_layer_norm.weight", h),
            Spec(p + "_layer_norm.bias", h),
        ];
    }

    /// <summary>fc1 (ffn, h) + bias, fc2 (h, ffn) + bias, and the final layer norm of block <paramref name="layerIndex"/>.</summary>
    public static IReadOnlyList<WeightSpec> Mlp(OptConfig config, int layerIndex)
    {
        CheckLayerIndex(config, layerIndex);
        long h = config.InputDim;
        long ffn = config.FfnEmbedDim;
        var p = $"decoder.layers.{layerIndex}.";
        return
        [
            Spec(p + "fc1.weight", ffn, h),
            Spec(p + "fc1.bias", ffn),
            Spec(p + "fc2.weight", h, ffn),
            Spec(p + "fc2.bias", h),
            Norm(p + "final_layer_norm.weight", h),
            Spec(p + "final_layer_norm.bias", h),
        ];
    }

    /// <summary>Self-attention then MLP weights of block <paramref name="layerIndex"/> (FlexGen's joint layer).</summary>
    public static IReadOnlyList<WeightSpec> TransformerLayer(OptConfig config, int layerIndex) =>
        [.. SelfAttention(config, layerIndex), .. Mlp(config, layerIndex)];

    /// <summary>Final layer norm and the (tied) token embedding used as the output projection.</summary>
    public static IReadOnlyList<WeightSpec> OutputEmbed(OptConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.InputDim;
        return
        [
            Norm("decoder.layer_norm.weight", h),
            Spec("decoder.layer_norm.bias", h),
            Spec("decoder.embed_tokens.weight", config.VocabSize, h),
        ];
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
