using System.Text.Json;
using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Families.Llama;

/// <summary>
/// Llama 3.1+'s <c>rope_scaling</c> of type <c>llama3</c>: it rescales RoPE's inverse frequencies (at every position).
/// </summary>
/// <param name="Factor">Long wavelengths are divided by it.</param>
/// <param name="LowFreqFactor">Wavelengths above original / low are scaled.</param>
/// <param name="HighFreqFactor">Wavelengths below original / high are kept; between the two, smoothed.</param>
/// <param name="OriginalMaxPositions"><c>original_max_position_embeddings</c>.</param>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);

/// <summary>
/// A model of the Llama family (<c>LlamaForCausalLM</c>, <c>MistralForCausalLM</c>, <c>Qwen2ForCausalLM</c>): pre-norm
/// blocks with RMSNorm, rotary positions, grouped-query attention, a SwiGLU MLP and an output head tied or untied.
/// Read from a Hugging Face <c>config.json</c> or a preset; the byte formulas are the exact float16 sizes of its weights.
/// </summary>
public sealed partial record LlamaConfig : ModelConfig
{
    /// <summary>Hugging Face's <c>model_type</c>: llama, mistral or qwen2.</summary>
    public string ModelType { get; init; } = "llama";

    public override int MaxSeqLen { get; init; } = 4096;
    public required int NumHiddenLayers { get; init; }
    public required int NHead { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public override required int HiddenSize { get; init; }

    /// <summary><c>head_dim</c>; null: hidden_size / heads.</summary>
    public int? ExplicitHeadDim { get; init; }

    public required int IntermediateSize { get; init; }
    public override int VocabSize { get; init; } = 32000;
    public override int PadTokenId { get; init; }
    public override int BosTokenId { get; init; } = 1;
    /// <summary>The first id of <c>eos_token_id</c> (Llama 3 instruct lists several; the engine stops at one).</summary>
    public override int EosTokenId { get; init; } = 2;

    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public Llama3RopeScaling? RopeScaling { get; init; }

    /// <summary>The output head reuses <c>embed_tokens.weight</c> (no <c>lm_head.weight</c>).</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>q, k and v projections have biases (Qwen2, or Llama's <c>attention_bias</c>).</summary>
    public bool QkvBias { get; init; }

    /// <summary>o_proj has a bias (Llama's <c>attention_bias</c>; not Qwen2).</summary>
    public bool OutBias { get; init; }

    /// <summary>Mistral's <c>sliding_window</c> when it applies; positions beyond it are refused (<see cref="MaxSeqLen"/> is capped by it).</summary>
    public int? SlidingWindow { get; init; }

    public override int DtypeBytes { get; init; } = 2;

    public override IModelFamily Family => LlamaFamily.Instance;
    public override int NumBlocks => NumHiddenLayers;

    public override int FfnSize => IntermediateSize;

    public override ModelConfig WithBlocks(int blocks) => this with { NumHiddenLayers = blocks };
    public override int NumHeads => NHead;
    public override int KvHeads => NumKeyValueHeads;
    public override int HeadDim => ExplicitHeadDim ?? HiddenSize / NHead;

    public override bool HeadDimGiven => ExplicitHeadDim is not null;

    /// <summary>Query heads per KV head.</summary>
    public int Groups => NHead / NumKeyValueHeads;

    /// <summary>
    /// The weights' bytes in float16, exactly the sum of <see cref="LlamaWeightSpecs"/>' sizes: per block q (h, n*d),
    /// k and v (h, kv*d), o (n*d, h), their biases, gate/up/down (3 h ffn) and two norms (2h); the embedding
    /// (vocab h), the head unless tied, and the final norm (h).
    /// </summary>
    public override long ModelBytes()
    {
        long h = HiddenSize, q = (long)NHead * HeadDim, kv = (long)NumKeyValueHeads * HeadDim, ffn = IntermediateSize;
        long attention = h * q + 2 * h * kv + q * h + (QkvBias ? q + 2 * kv : 0) + (OutBias ? h : 0);
        long mlp = 3 * h * ffn;
        long perBlock = attention + mlp + 2 * h;
        long embeddings = (TieWordEmbeddings ? 1 : 2) * (long)VocabSize * h + h;
        return DtypeBytes * (NumHiddenLayers * perBlock + embeddings);
    }

    // ---------------------------------------------------------------- presets (shapes of the published config.json)

    private static readonly Llama3RopeScaling Llama31Scaling = new(8.0, 1.0, 4.0, 8192);

    private static readonly Dictionary<string, LlamaConfig> Presets = new[]
    {
        new LlamaConfig
        {
            Name = "llama-3.2-1b", MaxSeqLen = 131072, NumHiddenLayers = 16, NHead = 32, NumKeyValueHeads = 8,
            HiddenSize = 2048, ExplicitHeadDim = 64, IntermediateSize = 8192, VocabSize = 128256, RmsNormEps = 1e-5,
            RopeTheta = 500000, RopeScaling = new(32.0, 1.0, 4.0, 8192), TieWordEmbeddings = true,
            BosTokenId = 128000, EosTokenId = 128001, PadTokenId = 128001,
        },
        new LlamaConfig
        {
            Name = "llama-2-7b", MaxSeqLen = 4096, NumHiddenLayers = 32, NHead = 32, NumKeyValueHeads = 32,
            HiddenSize = 4096, IntermediateSize = 11008, RmsNormEps = 1e-5,
        },
        new LlamaConfig
        {
            Name = "mistral-7b", ModelType = "mistral", MaxSeqLen = 4096, SlidingWindow = 4096, NumHiddenLayers = 32,
            NHead = 32, NumKeyValueHeads = 8, HiddenSize = 4096, IntermediateSize = 14336, RmsNormEps = 1e-5,
        },
        new LlamaConfig
        {
            Name = "qwen2.5-7b", ModelType = "qwen2", MaxSeqLen = 131072, NumHiddenLayers = 28, NHead = 28,
            NumKeyValueHeads = 4, HiddenSize = 3584, IntermediateSize = 18944, VocabSize = 152064, RmsNormEps = 1e-6,
            RopeTheta = 1000000, QkvBias = true, BosTokenId = 151643, EosTokenId = 151643,
            PadTokenId = 151643,
        },
        new LlamaConfig
        {
            Name = "llama-3.1-8b", MaxSeqLen = 131072, NumHiddenLayers = 32, NHead = 32, NumKeyValueHeads = 8,
            HiddenSize = 4096, IntermediateSize = 14336, VocabSize = 128256, RmsNormEps = 1e-5, RopeTheta = 500000,
            RopeScaling = Llama31Scaling, BosTokenId = 128000, EosTokenId = 128001,
            PadTokenId = 128001,
        },
        new LlamaConfig
        {
            Name = "llama-2-13b", MaxSeqLen = 4096, NumHiddenLayers = 40, NHead = 40, NumKeyValueHeads = 40,
            HiddenSize = 5120, IntermediateSize = 13824, RmsNormEps = 1e-5,
        },
        new LlamaConfig
        {
            Name = "llama-2-70b", MaxSeqLen = 4096, NumHiddenLayers = 80, NHead = 64, NumKeyValueHeads = 8,
            HiddenSize = 8192, IntermediateSize = 28672, RmsNormEps = 1e-5,
        },
    }.ToDictionary(c => c.Name, StringComparer.Ordinal);

    /// <summary>The preset names, smallest first.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = [.. Presets.Keys];

    /// <summary>
    /// A preset by name, case-insensitive, with or without an organisation prefix ("meta-llama/Llama-3.1-8B"); the
    /// Hugging Face names' "meta-" prefix, "-hf" suffix and "-v0.1" suffix are accepted.
    /// </summary>
    /// <exception cref="UnknownModelException">not a preset of this family.</exception>
    public static LlamaConfig FromPreset(string name) =>
        TryPreset(name, out var preset) ? preset : throw new UnknownModelException(name, PresetNames);

    public static bool IsPreset(string name) => TryPreset(name, out _);

    private static bool TryPreset(string name, out LlamaConfig preset)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var shortName = (name.Contains('/') ? name[(name.LastIndexOf('/') + 1)..] : name).ToLowerInvariant();
        var key = shortName;
        if (key.StartsWith("meta-", StringComparison.Ordinal)) key = key["meta-".Length..];
        foreach (var suffix in (string[])["-hf", "-v0.1"])
            if (key.EndsWith(suffix, StringComparison.Ordinal)) key = key[..^suffix.Length];
        if (Presets.TryGetValue(key, out var found))
        {
            preset = found with { Name = shortName };
            return true;
        }

        preset = null!;
        return false;
    }
}
