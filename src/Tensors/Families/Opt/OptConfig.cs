using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Families.Opt;

/// <summary>
/// An OPT model's shape, FlexGen's <c>OptConfig</c> (flexllmgen/opt_config.py): the presets, the byte formulas, and
/// loading a Hugging Face <c>config.json</c>. MaxSeqLen positions fit: the (MaxSeqLen + 2)-row position table is
/// indexed from 2, as in Hugging Face's OPT.
/// </summary>
public sealed record OptConfig : ModelConfig
{
    /// <summary>OPT's layer-norm epsilon (Hugging Face's default).</summary>
    public const double DefaultLayerNormEps = 1e-5;

    public override int MaxSeqLen { get; init; } = 2048;
    public required int NumHiddenLayers { get; init; }
    public required int NHead { get; init; }
    public override required int HiddenSize { get; init; }
    public required int InputDim { get; init; }
    public required int FfnEmbedDim { get; init; }
    public override int PadTokenId { get; init; } = 1;
    public override int VocabSize { get; init; } = 50272;
    public override int BosTokenId { get; init; } = 2;
    public override int EosTokenId { get; init; } = 2;

    /// <summary>MLP activation; the only one OPT and FlexGen use.</summary>
    public string ActivationFunction { get; init; } = "relu";

    /// <summary>Epsilon of every layer norm (attention, MLP, final).</summary>
    public double LayerNormEps { get; init; } = DefaultLayerNormEps;

    public override int DtypeBytes { get; init; } = 2;

    public override IModelFamily Family => OptFamily.Instance;

    public override int NumBlocks => NumHiddenLayers;

    public override int NumHeads => NHead;

    public override int FfnSize => FfnEmbedDim;

    public override ModelConfig WithBlocks(int blocks) => this with { NumHiddenLayers = blocks };

    /// <summary>
    /// FlexGen's <c>model_bytes()</c>, verbatim: with h = input_dim,
    /// 2 * (layers * (h(3h+1) + h(h+1) [attention] + h(4h+1) + 4h(h+1) [mlp] + 4h [layer norms]) + vocab (h+1)).
    /// It assumes ffn = 4h, undercounts the q/k/v biases and leaves out the position table; the exact stored
    /// bytes are the sum of <see cref="OptWeightSpecs"/>' sizes.
    /// </summary>
    public override long ModelBytes()
    {
        long h = InputDim;
        return 2 * (NumHiddenLayers * (
                    h * (3 * h + 1) + h * (h + 1) + // self-attention
                    h * (4 * h + 1) + h * 4 * (h + 1) + // mlp
                    h * 4) + // layer norms
                VocabSize * (h + 1)); // embedding
    }

    // ---------------------------------------------------------------- presets

    private static readonly Dictionary<string, OptConfig> Presets = new[]
    {
        // name, max_seq_len, layers, heads, hidden (= input_dim), ffn = 4 * hidden; flexllmgen/opt_config.py
        Preset("opt-125m", 2048, 12, 12, 768),
        Preset("opt-1.3b", 2048, 24, 32, 2048),
        Preset("opt-2.7b", 2048, 32, 32, 2560),
        Preset("opt-6.7b", 2048, 32, 32, 4096),
        Preset("opt-13b", 2048, 40, 40, 5120),
        Preset("opt-30b", 2048, 48, 56, 7168),
        Preset("opt-66b", 2048, 64, 72, 9216),
        Preset("opt-175b", 2048, 96, 96, 12288),
        Preset("galactica-30b", 2048, 48, 56, 7168) with { VocabSize = 50000 },
    }.ToDictionary(c => c.Name, StringComparer.Ordinal);

    /// <summary>Why FlexGen refuses opt-350m.</summary>
    public const string Opt350mRefusal =
        "opt-350m has a different architecture: word_embed_proj_dim 512 != hidden_size 1024 (embeddings go through " +
        "project_in / project_out) and it applies layer norm after each block (do_layer_norm_before = false); " +
        "FlexGen does not implement it either";

    /// <summary>The preset names, smallest first (opt-350m is known but refused).</summary>
    public static IReadOnlyList<string> PresetNames { get; } = [.. Presets.Keys];

    /// <summary>
    /// A FlexGen preset by name, case-insensitive, with or without an organisation prefix ("facebook/opt-6.7b");
    /// opt-iml and opt-iml-max variants map to their base architecture, as in FlexGen.
    /// </summary>
    /// <exception cref="UnsupportedModelException">opt-350m.</exception>
    /// <exception cref="UnknownModelException">any other name; the message lists the presets.</exception>
    public static OptConfig FromPreset(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var shortName = name.Contains('/') ? name[(name.LastIndexOf('/') + 1)..] : name;
        shortName = shortName.ToLowerInvariant();
        var archName = shortName.Replace("-iml-max", "", StringComparison.Ordinal)
            .Replace("-iml", "", StringComparison.Ordinal);
        if (archName == "opt-350m")
            throw new UnsupportedModelException(shortName, Opt350mRefusal);
        return Presets.TryGetValue(archName, out var preset)
            ? preset with { Name = shortName }
            : throw new UnknownModelException(name, PresetNames);
    }

    /// <summary>Whether <paramref name="name"/> is an OPT preset (opt-350m included: it is refused with the reason).</summary>
    public static bool IsPreset(string name)
    {
        try
        {
            FromPreset(name);
            return true;
        }
        catch (UnsupportedModelException)
        {
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>
    /// <paramref name="nameOrPath"/> as a folder holding <c>config.json</c>, a <c>config.json</c> file, or else a preset
    /// name.
    /// </summary>
    public static OptConfig FromNameOrPath(string nameOrPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nameOrPath);
        if (File.Exists(nameOrPath) || File.Exists(System.IO.Path.Combine(nameOrPath, "config.json")))
            return FromHuggingFaceConfig(nameOrPath);
        return FromPreset(nameOrPath);
    }

    private static OptConfig Preset(string name, int maxSeqLen, int layers, int heads, int hidden) => new()
    {
        Name = name,
        MaxSeqLen = maxSeqLen,
        NumHiddenLayers = layers,
        NHead = heads,
        HiddenSize = hidden,
        InputDim = hidden,
        FfnEmbedDim = hidden * 4,
    };

    // ---------------------------------------------------------------- Hugging Face config.json

    /// <summary>
    /// An OPT model from a Hugging Face <c>config.json</c> (the file, or the folder holding it). Refuses what FlexGen's
    /// OPT layers cannot run: other model types, post-layer-norm, activations other than ReLU, a projected embedding
    /// (word_embed_proj_dim != hidden_size), no final layer norm, no biases, no layer-norm affine, untied output
    /// embeddings. The name is <c>_name_or_path</c>'s last part if present, else the folder's name.
    /// </summary>
    /// <exception cref="ModelConfigException">unreadable file, malformed JSON, missing or mistyped keys.</exception>
    /// <exception cref="UnsupportedModelException">a valid config of a model the engine does not run.</exception>
    public static OptConfig FromHuggingFaceConfig(string path)
    {
        using var json = HuggingFaceConfig.Read(path);
        return FromHuggingFaceConfig(json);
    }

    /// <summary>An OPT model from a read <c>config.json</c> (see <see cref="FromHuggingFaceConfig(string)"/>).</summary>
    public static OptConfig FromHuggingFaceConfig(HuggingFaceConfig json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var file = json.File;
        var name = json.Name;

        var modelType = json.ModelType;
        if (modelType != "opt")
            throw json.Refuse("model_type", modelType, "only OPT models (model_type \"opt\") are supported");
        foreach (var architecture in json.Architectures)
            if (!architecture.StartsWith("OPT", StringComparison.Ordinal))
                throw json.Refuse("architectures", architecture, "only OPT architectures (OPTForCausalLM) are supported");

        var (hidden, heads, layers, ffn, vocab, maxPositions) = json.Decoder("ffn_dim", defaultMaxPositions: 2048);

        if (hidden % heads != 0)
            throw new ModelConfigException(file, "num_attention_heads",
                $"hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        if (!json.OptionalBool("do_layer_norm_before", true))
            throw json.Refuse("do_layer_norm_before", false,
                "post-layer-norm OPT (as opt-350m) is not implemented; FlexGen runs pre-layer-norm blocks only");
        var activation = json.OptionalString("activation_function", "relu");
        if (activation != "relu")
            throw json.Refuse("activation_function", activation, "only ReLU MLPs are implemented, as in FlexGen");
        var projDim = json.OptionalPositiveInt("word_embed_proj_dim", hidden);
        if (projDim != hidden)
            throw json.Refuse("word_embed_proj_dim", projDim,
                $"a projected embedding (word_embed_proj_dim != hidden_size {hidden}, project_in/project_out) is not implemented");
        if (json.OptionalBool("_remove_final_layer_norm", false))
            throw json.Refuse("_remove_final_layer_norm", true, "a model without the final layer norm is not implemented");
        if (!json.OptionalBool("enable_bias", true))
            throw json.Refuse("enable_bias", false, "linear layers without biases are not implemented");
        if (!json.OptionalBool("layer_norm_elementwise_affine", true))
            throw json.Refuse("layer_norm_elementwise_affine", false, "layer norms without weight and bias are not implemented");
        if (!json.OptionalBool("tie_word_embeddings", true))
            throw json.Refuse("tie_word_embeddings", false,
                "an untied output projection is not implemented; FlexGen reuses decoder.embed_tokens.weight");

        return new OptConfig
        {
            Name = name,
            MaxSeqLen = maxPositions,
            NumHiddenLayers = layers,
            NHead = heads,
            HiddenSize = hidden,
            InputDim = hidden,
            FfnEmbedDim = ffn,
            VocabSize = vocab,
            PadTokenId = json.OptionalInt("pad_token_id", 1),
            BosTokenId = json.OptionalInt("bos_token_id", 2),
            EosTokenId = json.OptionalInt("eos_token_id", 2),
            ActivationFunction = activation,
        };
    }
}
