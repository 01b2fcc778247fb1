using TorchSharp;

namespace FlexGen.Tensors.Models;

/// <summary>The kinds of layer FlexGen runs, in its execution order.</summary>
public enum OptLayerKind
{
    InputEmbed,
    SelfAttention,
    Mlp,
    /// <summary>Self-attention followed by the MLP of the same block (FlexGen without <c>sep_layer</c>).</summary>
    TransformerLayer,
    OutputEmbed,
}

/// <summary>
/// One layer of FlexGen's execution order (index <c>j</c> of the block schedule) and its weights.
/// </summary>
/// <param name="Index">Position in the execution order (FlexGen's <c>j</c>).</param>
/// <param name="Kind">What the layer computes.</param>
/// <param name="BlockIndex">The transformer block (<c>decoder.layers.{i}</c>); null for the embeddings.</param>
/// <param name="WeightGroups">
/// The weights in FlexGen's order, grouped as FlexGen places them: each group is one <c>init_weight_list</c> call
/// (a <see cref="OptLayerKind.TransformerLayer"/> has two groups, attention then MLP; every other layer one).
/// </param>
public sealed record OptLayerSpec(
    int Index,
    OptLayerKind Kind,
    int? BlockIndex,
    IReadOnlyList<IReadOnlyList<WeightSpec>> WeightGroups)
{
    /// <summary>All weights of the layer in FlexGen's order (the groups concatenated).</summary>
    public IReadOnlyList<WeightSpec> Weights { get; } = WeightGroups.SelectMany(g => g).ToArray();

    /// <summary>Whether the layer owns a KV cache (one per GPU batch).</summary>
    public bool HasKvCache => Kind is OptLayerKind.SelfAttention or OptLayerKind.TransformerLayer;

    /// <summary>Uncompressed bytes of all weights of the layer.</summary>
    public long WeightBytes => Weights.Sum(w => w.Bytes);

    public override string ToString() => BlockIndex is { } i ? $"{Kind}[{i}] (j={Index})" : $"{Kind} (j={Index})";
}

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
            Spec(p + "_layer_norm.weight", h),
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
            Spec(p + "final_layer_norm.weight", h),
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
            Spec("decoder.layer_norm.weight", h),
            Spec("decoder.layer_norm.bias", h),
            Spec("decoder.embed_tokens.weight", config.VocabSize, h),
        ];
    }

    /// <summary>
    /// The layers in execution order: InputEmbed, then per block either SelfAttention and Mlp
    /// (<paramref name="sepLayer"/>) or one TransformerLayer, then OutputEmbed.
    /// </summary>
    public static IReadOnlyList<OptLayerSpec> Layers(OptConfig config, bool sepLayer)
    {
        ArgumentNullException.ThrowIfNull(config);
        var layers = new List<OptLayerSpec>(2 + config.NumHiddenLayers * (sepLayer ? 2 : 1));
        void Add(OptLayerKind kind, int? block, params IReadOnlyList<WeightSpec>[] groups) =>
            layers.Add(new OptLayerSpec(layers.Count, kind, block, groups));

        Add(OptLayerKind.InputEmbed, null, InputEmbed(config));
        for (var i = 0; i < config.NumHiddenLayers; i++)
        {
            if (sepLayer)
            {
                Add(OptLayerKind.SelfAttention, i, SelfAttention(config, i));
                Add(OptLayerKind.Mlp, i, Mlp(config, i));
            }
            else
            {
                Add(OptLayerKind.TransformerLayer, i, SelfAttention(config, i), Mlp(config, i));
            }
        }
        Add(OptLayerKind.OutputEmbed, null, OutputEmbed(config));
        return layers;
    }

    private static WeightSpec Spec(string fileName, params long[] shape) => new(fileName, shape, StoredDtype);

    private static void CheckLayerIndex(OptConfig config, int layerIndex)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (layerIndex < 0 || layerIndex >= config.NumHiddenLayers)
            throw new ArgumentOutOfRangeException(nameof(layerIndex), layerIndex,
                $"Layer index must be in [0, {config.NumHiddenLayers}) for {config.Name} ({config.NumHiddenLayers} layers).");
    }
}
