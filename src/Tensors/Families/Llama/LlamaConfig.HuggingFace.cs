using System.Text.Json;
using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Families.Llama;

/// <summary>Reading a Hugging Face config.json (llama, mistral, qwen2) into a <see cref="LlamaConfig"/>.</summary>
public sealed partial record LlamaConfig
{
    /// <summary>Whether this family reads a config of <paramref name="modelType"/>.</summary>
    public static bool ReadsModelType(string modelType) => modelType is "llama" or "mistral" or "qwen2";

    /// <summary>
    /// A Llama, Mistral or Qwen2 model from a Hugging Face <c>config.json</c>. Refuses what the layers cannot run:
    /// activations other than SiLU, MLP biases, rope_scaling types other than llama3, Qwen2 sliding-window layers.
    /// </summary>
    /// <exception cref="ModelConfigException">missing or mistyped keys.</exception>
    /// <exception cref="UnsupportedModelException">a valid config of a variant the family does not run.</exception>
    public static LlamaConfig FromHuggingFaceConfig(HuggingFaceConfig json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var file = json.File;
        var modelType = json.ModelType;
        if (!ReadsModelType(modelType))
            throw json.Refuse("model_type", modelType, "only llama, mistral and qwen2 models are read by the Llama family");

        var (hidden, heads, layers, ffn, vocab, maxPositions) = json.Decoder("intermediate_size", defaultMaxPositions: 4096);
        var kvHeads = json.OptionalPositiveInt("num_key_value_heads", heads);
        int? headDim = json.OptionalInt("head_dim", 0) is > 0 and var d ? d : null;
        if (headDim is null && hidden % heads != 0)
            throw new ModelConfigException(file, "num_attention_heads",
                $"hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and no head_dim is given)");
        if (heads % kvHeads != 0)
            throw new ModelConfigException(file, "num_key_value_heads",
                $"num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        if ((headDim ?? hidden / heads) % 2 != 0)
            throw json.Refuse("head_dim", headDim ?? hidden / heads, "rotary positions need an even head_dim");

        var activation = json.OptionalString("hidden_act", "silu");
        if (activation != "silu")
            throw json.Refuse("hidden_act", activation, "only SiLU (SwiGLU) MLPs are implemented");
        if (json.OptionalBool("mlp_bias", false))
            throw json.Refuse("mlp_bias", true, "MLP biases are not implemented");
        bool attentionBias = json.OptionalBool("attention_bias", false);
        bool qwen2 = modelType == "qwen2";

        using var document = Parse(file);
        var root = document.RootElement;
        var eps = OptionalDouble(root, file, "rms_norm_eps", 1e-6);
        // transformers v5 writes RoPE's settings as one rope_parameters object (rope_theta, rope_type, the factors)
        // instead of the top-level rope_theta and rope_scaling; either layout is read.
        var ropeParameters = RopeParametersOf(root, file);
        var theta = root.TryGetProperty("rope_theta", out var t) && t.ValueKind != JsonValueKind.Null
            ? OptionalDouble(root, file, "rope_theta", 10000.0)
            : ropeParameters is { } parameters ? OptionalDouble(parameters, file, "rope_theta", 10000.0, "rope_parameters.") : 10000.0;
        var scaling = RopeScalingOf(json, root, file, maxPositions, ropeParameters);
        var eos = IntOrInts(root, file, "eos_token_id") ?? [2];
        var bos = IntOrInts(root, file, "bos_token_id") is [var b, ..] ? b : 1;
        var pad = IntOrInts(root, file, "pad_token_id") is [var p, ..] ? p : eos[0];

        int? slidingWindow = null;
        if (modelType == "mistral")
        {
            slidingWindow = json.OptionalInt("sliding_window", 0) is > 0 and var w ? w : null;
        }
        else if (qwen2 && json.OptionalBool("use_sliding_window", false))
        {
            throw json.Refuse("use_sliding_window", true,
                "Qwen2 sliding-window attention layers are not implemented; full attention (use_sliding_window false) is");
        }

        return new LlamaConfig
        {
            Name = json.Name,
            ModelType = modelType,
            MaxSeqLen = slidingWindow is { } window ? Math.Min(window, maxPositions) : maxPositions,
            SlidingWindow = slidingWindow,
            NumHiddenLayers = layers,
            NHead = heads,
            NumKeyValueHeads = kvHeads,
            HiddenSize = hidden,
            ExplicitHeadDim = headDim,
            IntermediateSize = ffn,
            VocabSize = vocab,
            RmsNormEps = eps,
            RopeTheta = theta,
            RopeScaling = scaling,
            TieWordEmbeddings = json.OptionalBool("tie_word_embeddings", false),
            QkvBias = qwen2 || attentionBias,
            OutBias = !qwen2 && attentionBias,
            BosTokenId = bos,
            EosTokenId = eos[0],
            PadTokenId = pad,
        };
    }

    // transformers v5's rope_parameters object, or null when absent.
    private static JsonElement? RopeParametersOf(JsonElement root, string file)
    {
        if (!root.TryGetProperty("rope_parameters", out var parameters) || parameters.ValueKind == JsonValueKind.Null)
            return null;
        return parameters.ValueKind == JsonValueKind.Object
            ? parameters
            : throw new ModelConfigException(file, "rope_parameters", $"must be an object or null, not {parameters.GetRawText()}");
    }

    private static Llama3RopeScaling? RopeScalingOf(HuggingFaceConfig json, JsonElement root, string file, int maxPositions,
        JsonElement? ropeParameters)
    {
        JsonElement scaling;
        string key = "rope_scaling";
        if (root.TryGetProperty("rope_scaling", out var given) && given.ValueKind != JsonValueKind.Null)
            scaling = given;
        else if (ropeParameters is { } parameters)
            (scaling, key) = (parameters, "rope_parameters");
        else
            return null;
        if (scaling.ValueKind != JsonValueKind.Object)
            throw new ModelConfigException(file, key, $"must be an object or null, not {scaling.GetRawText()}");
        string type = scaling.TryGetProperty("rope_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()!
            : scaling.TryGetProperty("type", out var t2) && t2.ValueKind == JsonValueKind.String ? t2.GetString()! : "";
        // rope_parameters always holds the theta; without a rope_type it is the default (unscaled) RoPE.
        if (type == "default" || (type == "" && key == "rope_parameters"))
            return null;
        if (type != "llama3")
            throw json.Refuse(key, type,
                "only rope_scaling of type \"llama3\" (or none) is implemented; this RoPE scaling type is not");
        string prefix = key + ".";
        return new Llama3RopeScaling(
            OptionalDouble(scaling, file, "factor", 8.0, prefix),
            OptionalDouble(scaling, file, "low_freq_factor", 1.0, prefix),
            OptionalDouble(scaling, file, "high_freq_factor", 4.0, prefix),
            (int)OptionalDouble(scaling, file, "original_max_position_embeddings", Math.Min(8192, maxPositions), prefix));
    }

    private static JsonDocument Parse(string file)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(file));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            throw new ModelConfigException(file, null, $"cannot read the file ({e.Message})", e);
        }
    }

    private static double OptionalDouble(JsonElement obj, string file, string key, double fallback, string prefix = "")
    {
        if (!obj.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && d > 0
            ? d
            : throw new ModelConfigException(file, prefix + key, $"must be a positive number, not {v.GetRawText()}");
    }

    // An id or a list of ids (Llama 3 instruct lists several EOS ids); null when absent.
    private static int[]? IntOrInts(JsonElement root, string file, string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        int Id(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var n) && n >= 0
            ? n
            : throw new ModelConfigException(file, key, $"must be a token id or a list of them, not {v.GetRawText()}");
        var ids = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(Id).ToArray() : [Id(v)];
        return ids.Length > 0 ? ids : null;
    }
}
