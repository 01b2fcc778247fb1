namespace FlexGen.Tensors.Models;

/// <summary>A model FlexGen knows of but cannot run (a preset its family refuses), or a config.json outside what the engine runs.</summary>
public sealed class UnsupportedModelException : NotSupportedException
{
    public UnsupportedModelException(string modelName, string reason, string? key = null)
        : base($"Model '{modelName}' is not supported" + (key is null ? "" : $" ({key})") + $": {reason}")
    {
        ModelName = modelName;
        Reason = reason;
        Key = key;
    }

    public string ModelName { get; }

    public string Reason { get; }

    /// <summary>The config.json key that decided the refusal, if any.</summary>
    public string? Key { get; }
}

/// <summary>A model name that is no preset (and no folder or config.json file).</summary>
public sealed class UnknownModelException : ArgumentException
{
    public UnknownModelException(string name, IReadOnlyList<string> knownPresets)
        : base(Describe(name, knownPresets), "name")
    {
        Name = name;
        KnownPresets = knownPresets;
    }

    public string Name { get; }

    public IReadOnlyList<string> KnownPresets { get; }

    public override string Message => Describe(Name, KnownPresets);

    private static string Describe(string name, IReadOnlyList<string> knownPresets) =>
        $"Unknown model '{name}'. Known presets: {string.Join(", ", knownPresets)} " +
        "(with or without the 'facebook/' prefix), or a folder holding a Hugging Face config.json.";
}

/// <summary>A Hugging Face config.json that cannot be read: names the file and the key.</summary>
public sealed class ModelConfigException : FormatException
{
    public ModelConfigException(string path, string? key, string problem, Exception? inner = null)
        : base($"{path}" + (key is null ? "" : $", key '{key}'") + $": {problem}", inner)
    {
        Path = path;
        Key = key;
    }

    public string Path { get; }

    public string? Key { get; }
}

/// <summary>A weight file is missing, disagrees with the model config, or is corrupt.</summary>
public sealed class WeightLoadException(string path, string problem, Exception? inner = null)
    : IOException($"Weight '{path}': {problem}.", inner)
{
    public string Path { get; } = path;
}
