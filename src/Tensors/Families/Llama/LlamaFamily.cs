using FlexGen.Tensors.Families.Llama;
using FlexGen.Tensors.Models;

// The family's one registration line.
[assembly: ModelFamily(typeof(LlamaFamily), Order = 1)]

namespace FlexGen.Tensors.Families.Llama;

/// <summary>
/// Llama, Mistral and Qwen2 (<c>LlamaForCausalLM</c>, <c>MistralForCausalLM</c>, <c>Qwen2ForCausalLM</c>): RMSNorm,
/// rotary positions, grouped-query attention, SwiGLU MLP, a tied or untied head.
/// </summary>
public sealed class LlamaFamily : IModelFamily
{
    /// <summary>The instance configs name as their family (the registry makes its own; the family is stateless).</summary>
    public static LlamaFamily Instance { get; } = new();

    public string Name => "Llama";

    public IReadOnlyList<string> PresetNames => LlamaConfig.PresetNames;

    public bool Reads(string modelType, IReadOnlyList<string> architectures) => LlamaConfig.ReadsModelType(modelType);

    public ModelConfig ReadConfig(HuggingFaceConfig config) => LlamaConfig.FromHuggingFaceConfig(config);

    public bool IsPreset(string name) => LlamaConfig.IsPreset(name);

    public ModelConfig FromPreset(string name) => LlamaConfig.FromPreset(name);

    /// <summary>
    /// A Llama-2-like model of the given size: as many KV heads as query heads, MLP width 8/3 h rounded up to a
    /// multiple of 64, RoPE theta 10000.
    /// </summary>
    public ModelConfig OfSize(string name, int blocks, int hiddenSize, int heads, int vocabSize, int maxSeqLen) => new LlamaConfig
    {
        Name = name,
        MaxSeqLen = maxSeqLen,
        NumHiddenLayers = blocks,
        NHead = heads,
        NumKeyValueHeads = heads,
        HiddenSize = hiddenSize,
        IntermediateSize = (8 * hiddenSize / 3 + 63) / 64 * 64,
        VocabSize = vocabSize,
    };

    public IReadOnlyList<LayerSpec> Layers(ModelConfig config, bool sepLayer) => LlamaWeightSpecs.Layers(Llama(config), sepLayer);

    public ILayerCompute Compute(ModelConfig config) => new LlamaLayerCompute(Llama(config));

    /// <summary>
    /// The model folder's files are the Hugging Face names without "model." (which some checkpoints lack too);
    /// lm_head.weight is its own tensor, or, when tied, absent or equal to the token embedding.
    /// </summary>
    public CheckpointNaming Checkpoint(ModelConfig config)
    {
        var llama = Llama(config);
        return new CheckpointNaming(
            fileName => fileName == "lm_head.weight" ? [fileName] : ["model." + fileName, fileName],
            TiedHead: llama.TieWordEmbeddings ? "lm_head.weight" : null,
            TiedHeadFile: llama.TieWordEmbeddings ? "embed_tokens.weight" : null,
            SideFiles: ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]);
    }

    /// <summary>
    /// Llama 3 and Qwen2 ship a byte-level BPE tokenizer.json; Llama 2 and Mistral a SentencePiece tokenizer.model.
    /// Llama and Mistral prompts start with BOS; Qwen2's do not. Text generation stops at EOS by default.
    /// </summary>
    public TokenizerSpec Tokenizer(ModelConfig config)
    {
        var llama = Llama(config);
        bool json = llama.ModelType == "qwen2" || llama.VocabSize > 100_000;
        return new TokenizerSpec(
            json ? TokenizerKind.TokenizerJson : TokenizerKind.SentencePiece,
            llama.BosTokenId,
            PrependBos: llama.ModelType != "qwen2",
            [.. new[] { llama.BosTokenId, llama.PadTokenId, llama.EosTokenId }.Distinct()],
            StopAtEos: true);
    }

    private static LlamaConfig Llama(ModelConfig config) => config as LlamaConfig
        ?? throw new ArgumentException($"{config.Name} is a {config.Family.Name} model, not Llama.", nameof(config));
}
