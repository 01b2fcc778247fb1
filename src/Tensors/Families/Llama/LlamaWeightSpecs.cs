using FlexGen.Tensors.Models;
using TorchSharp;

namespace FlexGen.Tensors.Families.Llama;

/// <summary>
/// The weight tensors of every Llama layer, in the order the layer math reads them, named as the model folder stores
/// them: the Hugging Face parameter name without the leading <c>model.</c> (<c>embed_tokens.weight</c>,
/// <c>layers.N.self_attn.q_proj.weight</c>, <c>norm.weight</c>, <c>lm_head.weight</c>). Linear weights are
/// (out_features, in_features).
/// </summary>
public static class LlamaWeightSpecs
{
    private const torch.ScalarType StoredDtype = torch.ScalarType.Float16;

    /// <summary>The token embedding (vocab, h).</summary>
    public static IReadOnlyList<WeightSpec> InputEmbed(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return [Spec("embed_tokens.weight", config.VocabSize, config.HiddenSize)];
    }

    /// <summary>
    /// q (n*d, h), k and v (kv*d, h), o (h, n*d), each followed by its bias when the config has one, then
    /// input_layernorm (h).
    /// </summary>
    public static IReadOnlyList<WeightSpec> SelfAttention(LlamaConfig config, int layerIndex)
    {
        CheckLayerIndex(config, layerIndex);
        long h = config.HiddenSize, q = (long)config.NHead * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        var p = $"layers.{layerIndex}.";
        var specs = new List<WeightSpec>();
        void Projection(string name, long outFeatures, long inFeatures, bool bias)
        {
            specs.Add(Spec($"{p}self_attn.{name}.weight", outFeatures, inFeatures));
            if (bias) specs.Add(Spec($"{p}self_attn.{name}.bias", outFeatures));
        }

        Projection("q_proj", q, h, config.QkvBias);
        Projection("k_proj", kv, h, config.QkvBias);
        Projection("v_proj", kv, h, config.QkvBias);
        Projection("o_proj", h, q, config.OutBias);
        specs.Add(Norm(p + "input_layernorm.weight", h));
        return specs;
    }

    /// <summary>gate (ffn, h), up (ffn, h), down (h, ffn), then post_attention_layernorm (h).</summary>
    public static IReadOnlyList<WeightSpec> Mlp(LlamaConfig config, int layerIndex)
    {
        CheckLayerIndex(config, layerIndex);
        long h = config.HiddenSize, ffn = config.IntermediateSize;
        var p = $"layers.{layerIndex}.";
        return
        [
            Spec(p + "mlp.gate_proj.weight", ffn, h),
            Spec(p + "mlp.up_proj.weight", ffn, h),
            Spec(p + "mlp.down_proj.weight", h, ffn),
            Norm(p + "post_attention_layernorm.weight", h),
        ];
    }

    /// <summary>The final norm (h) and the head (vocab, h): <c>lm_head.weight</c>, or <c>embed_tokens.weight</c> when tied.</summary>
    public static IReadOnlyList<WeightSpec> OutputEmbed(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return
        [
            Norm("norm.weight", config.HiddenSize),
            Spec(HeadFile(config), config.VocabSize, config.HiddenSize),
        ];
    }

    /// <summary>The file the output head is read from.</summary>
    public static string HeadFile(LlamaConfig config) => config.TieWordEmbeddings ? "embed_tokens.weight" : "lm_head.weight";

    /// <summary>The layers in execution order (see <see cref="LayerSpec.InExecutionOrder"/>).</summary>
    public static IReadOnlyList<LayerSpec> Layers(LlamaConfig config, bool sepLayer)
    {
        ArgumentNullException.ThrowIfNull(config);
        return LayerSpec.InExecutionOrder(config.NumHiddenLayers, sepLayer, InputEmbed(config),
            i => SelfAttention(config, i), i => Mlp(config, i), OutputEmbed(config));
    }

    private static WeightSpec Spec(string fileName, params long[] shape) => new(fileName, shape, StoredDtype);

    // An RMSNorm's weight: dummy weights start it near 1.
    private static WeightSpec Norm(string fileName, long size) => new(fileName, [size], StoredDtype, WeightInit.NormScale);

    private static void CheckLayerIndex(LlamaConfig config, int layerIndex)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (layerIndex < 0 || layerIndex >= config.NumHiddenLayers)
            throw new ArgumentOutOfRangeException(nameof(layerIndex), layerIndex,
                $"Layer index must be in [0, {config.NumHiddenLayers}) for {config.Name} ({config.NumHiddenLayers} layers).");
    }
}
