using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using static TorchSharp.torch;

// The family's one registration line.
[assembly: ModelFamily(typeof(OptFamily))]

namespace FlexGen.Tensors.Families.Opt;

/// <summary>
/// OPT (and Galactica) as FlexGen runs them: learned positions, pre-layer-norm attention with q/k/v/out biases,
/// ReLU MLP, output projection tied to the token embedding, GPT-2 byte-level BPE with BOS prepended.
/// </summary>
public sealed class OptFamily : IModelFamily
{
    /// <summary>The instance configs name as their family (the registry makes its own; the family is stateless).</summary>
    public static OptFamily Instance { get; } = new();

    public string Name => "OPT";

    public IReadOnlyList<string> PresetNames => OptConfig.PresetNames;

    public bool Reads(string modelType, IReadOnlyList<string> architectures) => modelType == "opt";

    public ModelConfig ReadConfig(HuggingFaceConfig config) => OptConfig.FromHuggingFaceConfig(config);

    public bool IsPreset(string name) => OptConfig.IsPreset(name);

    public ModelConfig FromPreset(string name) => OptConfig.FromPreset(name);

    /// <summary>FFN = 4 * hidden, as every OPT preset.</summary>
    public ModelConfig OfSize(string name, int blocks, int hiddenSize, int heads, int vocabSize, int maxSeqLen) => new OptConfig
    {
        Name = name,
        MaxSeqLen = maxSeqLen,
        NumHiddenLayers = blocks,
        NHead = heads,
        HiddenSize = hiddenSize,
        InputDim = hiddenSize,
        FfnEmbedDim = 4 * hiddenSize,
        VocabSize = vocabSize,
    };

    public IReadOnlyList<LayerSpec> Layers(ModelConfig config, bool sepLayer) => OptWeightSpecs.Layers(Opt(config), sepLayer);

    public ILayerCompute Compute(ModelConfig config) => new OptLayerCompute(Opt(config));

    /// <summary>
    /// Hugging Face names with or without the leading "model."; "decoder.final_layer_norm" is stored as
    /// "decoder.layer_norm" (FlexGen's download_opt_weights). lm_head, when present, must equal the token embedding.
    /// </summary>
    public CheckpointNaming Checkpoint(ModelConfig config) => new(
        fileName =>
        {
            var hfName = fileName.StartsWith("decoder.layer_norm.", StringComparison.Ordinal)
                ? "decoder.final_layer_norm." + fileName["decoder.layer_norm.".Length..]
                : fileName;
            return ["model." + hfName, hfName];
        },
        TiedHead: "lm_head.weight",
        TiedHeadFile: "decoder.embed_tokens.weight",
        SideFiles: ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]);

    /// <summary>GPT-2 byte-level BPE, no prefix space, BOS prepended; pad, BOS and EOS left out when decoding.</summary>
    public TokenizerSpec Tokenizer(ModelConfig config) => new(
        TokenizerKind.ByteLevelBpe, config.BosTokenId, PrependBos: true,
        [config.BosTokenId, config.PadTokenId, config.EosTokenId]);

    private static OptConfig Opt(ModelConfig config) => config as OptConfig
        ?? throw new ArgumentException($"{config.Name} is a {config.Family.Name} model, not OPT.", nameof(config));
}

/// <summary>OPT's layer math behind the engine's seam: weight lists in <see cref="OptWeightSpecs"/> order.</summary>
public sealed class OptLayerCompute(OptConfig config) : ILayerCompute
{
    public Tensor Embed(Tensor tokenIds, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute) =>
        InputEmbed.Forward(tokenIds, attentionMask, InputEmbedWeights.FromOrdered(weights), compute);

    public AttentionOutput Prefill(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute) =>
        SelfAttention.Prefill(hidden, attentionMask, Attention(weights), config.NHead, compute);

    public AttentionOutput Decode(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights,
        IReadOnlyList<CacheSegment> segments, ComputeSettings compute, double attnSparsity) =>
        SelfAttention.DecodeSegmented(hidden, attentionMask, Attention(weights), config.NHead, segments, compute, attnSparsity);

    public Tensor Mlp(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute) =>
        Opt.Mlp.Forward(hidden, MlpWeights.FromOrdered(weights) with { LayerNormEps = config.LayerNormEps }, compute);

    public Tensor Logits(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute) =>
        OutputEmbed.Logits(hidden, OutputEmbedWeights.FromOrdered(weights) with { LayerNormEps = config.LayerNormEps }, compute);

    private SelfAttentionWeights Attention(IReadOnlyList<Tensor> weights) =>
        SelfAttentionWeights.FromOrdered(weights) with { LayerNormEps = config.LayerNormEps };
}
