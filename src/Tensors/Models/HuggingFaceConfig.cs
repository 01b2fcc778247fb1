using System.Text.Json;

namespace FlexGen.Tensors.Models;

/// <summary>
/// A Hugging Face <c>config.json</c>, read for a model family: typed getters that name the file and key on any
/// error. Owns the parsed document: dispose it.
/// </summary>
public sealed class HuggingFaceConfig : IDisposable
{
    private readonly JsonDocument _document;
    private readonly JsonElement _root;

    private HuggingFaceConfig(JsonDocument document, string file)
    {
        _document = document;
        _root = document.RootElement;
        File = file;
        var folderName = new DirectoryInfo(Path.GetDirectoryName(Path.GetFullPath(file))!).Name;
        var nameOrPath = OptionalString("_name_or_path", "");
        Name = nameOrPath.Length > 0 ? nameOrPath.TrimEnd('/').Split('/')[^1] : folderName;
    }

    /// <summary>The config.json file.</summary>
    public string File { get; }

    /// <summary>The model's name: <c>_name_or_path</c>'s last part if present, else the folder's name.</summary>
    public string Name { get; }

    /// <summary><c>model_type</c>, or "" when absent.</summary>
    public string ModelType => OptionalString("model_type", "");

    /// <summary><c>architectures</c>, or empty when absent.</summary>
    public IReadOnlyList<string> Architectures => OptionalStrings("architectures");

    /// <summary>Reads <paramref name="path"/>: a config.json file, or the folder holding one.</summary>
    /// <exception cref="ModelConfigException">unreadable file, malformed JSON, not an object.</exception>
    public static HuggingFaceConfig Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        string text;
        try
        {
            text = System.IO.File.ReadAllText(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelConfigException(file, null, $"cannot read the file ({e.Message})", e);
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(file, null, $"not valid JSON ({e.Message})", e);
        }

        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = document.RootElement.ValueKind;
            document.Dispose();
            throw new ModelConfigException(file, null, $"the top level must be an object, not {kind}");
        }

        return new HuggingFaceConfig(document, file);
    }

    /// <summary>
    /// The decoder's sizes every family reads alike: hidden_size, num_attention_heads, num_hidden_layers, vocab_size,
    /// max_position_embeddings (else <paramref name="defaultMaxPositions"/>) and the MLP width under
    /// <paramref name="ffnKey"/> (the families name it differently).
    /// </summary>
    public DecoderSizes Decoder(string ffnKey, int defaultMaxPositions) => new(
        RequiredPositiveInt("hidden_size"),
        RequiredPositiveInt("num_attention_heads"),
        RequiredPositiveInt("num_hidden_layers"),
        RequiredPositiveInt(ffnKey),
        RequiredPositiveInt("vocab_size"),
        OptionalPositiveInt("max_position_embeddings", defaultMaxPositions));

    /// <summary>A refusal of a valid config the engine does not run, naming the file, key and value.</summary>
    public UnsupportedModelException Refuse(string key, object value, string reason) =>
        new(Name, $"{File}: {key} = {FormatValue(value)}: {reason}", key);

    public int RequiredPositiveInt(string key) =>
        _root.TryGetProperty(key, out var v)
            ? Positive(key, Int(key, v))
            : throw new ModelConfigException(File, key, "required key is missing");

    public int OptionalPositiveInt(string key, int fallback) =>
        _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? Positive(key, Int(key, v)) : fallback;

    public int OptionalInt(string key, int fallback) =>
        _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? Int(key, v) : fallback;

    public bool OptionalBool(string key, bool fallback)
    {
        if (!_root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelConfigException(File, key, $"must be true or false, not {v.GetRawText()}"),
        };
    }

    public string OptionalString(string key, string fallback)
    {
        if (!_root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new ModelConfigException(File, key, $"must be a string, not {v.GetRawText()}");
    }

    public IReadOnlyList<string> OptionalStrings(string key)
    {
        if (!_root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return [];
        if (v.ValueKind != JsonValueKind.Array)
            throw new ModelConfigException(File, key, $"must be an array of strings, not {v.GetRawText()}");
        return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String
            ? e.GetString()!
            : throw new ModelConfigException(File, key, $"must hold strings only, found {e.GetRawText()}")).ToArray();
    }

    public void Dispose() => _document.Dispose();

    private int Int(string key, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var n)
            ? n
            : throw new ModelConfigException(File, key, $"must be an integer, not {v.GetRawText()}");

    private int Positive(string key, int n) =>
        n >= 1 ? n : throw new ModelConfigException(File, key, $"must be >= 1, not {n}");

    private static string FormatValue(object value) => value switch
    {
        string s => $"\"{s}\"",
        bool b => b ? "true" : "false",
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "",
    };
}

/// <summary>A decoder-only transformer's sizes as config.json gives them (see <see cref="HuggingFaceConfig.Decoder"/>).</summary>
public sealed record DecoderSizes(int Hidden, int Heads, int Layers, int Ffn, int Vocab, int MaxPositions);
