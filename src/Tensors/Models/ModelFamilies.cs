using System.Reflection;

namespace FlexGen.Tensors.Models;

/// <summary>
/// The registered model families (each registers itself with one <see cref="ModelFamilyAttribute"/> line in its
/// folder) and how a model name or folder resolves to one of them.
/// </summary>
public static class ModelFamilies
{
    private static readonly Lazy<IReadOnlyList<IModelFamily>> Registered = new(() =>
        typeof(ModelFamilies).Assembly.GetCustomAttributes<ModelFamilyAttribute>()
            .Select(a => (a.Order, Family: (IModelFamily)Activator.CreateInstance(a.Family)!))
            .OrderBy(f => f.Order)
            .ThenBy(f => f.Family.Name, StringComparer.Ordinal)
            .Select(f => f.Family)
            .ToArray());

    /// <summary>Every registered family, by <see cref="ModelFamilyAttribute.Order"/>, then name.</summary>
    public static IReadOnlyList<IModelFamily> All => Registered.Value;

    /// <summary>Every family's presets (for help text and "unknown model" messages).</summary>
    public static IReadOnlyList<string> PresetNames => [.. All.SelectMany(f => f.PresetNames)];

    /// <summary>Whether a name is a preset of some family (refused presets included: resolving them says why).</summary>
    public static bool IsPreset(string name) => All.Any(f => f.IsPreset(name));

    /// <summary>A preset by name, from the family that has it.</summary>
    /// <exception cref="UnsupportedModelException">a known preset its family refuses.</exception>
    /// <exception cref="UnknownModelException">no family has it; the message lists the presets.</exception>
    public static ModelConfig FromPreset(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return All.FirstOrDefault(f => f.IsPreset(name)) is { } family
            ? family.FromPreset(name)
            : throw new UnknownModelException(name, PresetNames);
    }

    /// <summary>
    /// The config of a Hugging Face <c>config.json</c> (the file, or the folder holding it), read by the family
    /// whose <see cref="IModelFamily.Reads"/> accepts its <c>model_type</c> and <c>architectures</c>.
    /// </summary>
    /// <exception cref="ModelConfigException">unreadable file, malformed JSON, missing or mistyped keys.</exception>
    /// <exception cref="UnsupportedModelException">no family reads it, or its family refuses the variant.</exception>
    public static ModelConfig FromConfigFile(string path)
    {
        using var config = HuggingFaceConfig.Read(path);
        var modelType = config.ModelType;
        var family = All.FirstOrDefault(f => f.Reads(modelType, config.Architectures))
            ?? throw config.Refuse("model_type", modelType,
                $"only {string.Join(" or ", All.Select(f => f.Name + " models"))} are supported");
        return family.ReadConfig(config);
    }

    /// <summary>
    /// <paramref name="nameOrPath"/> as a folder holding <c>config.json</c>, a <c>config.json</c> file, or else a
    /// preset name.
    /// </summary>
    public static ModelConfig FromNameOrPath(string nameOrPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(nameOrPath);
        if (File.Exists(nameOrPath) || File.Exists(Path.Combine(nameOrPath, "config.json")))
            return FromConfigFile(nameOrPath);
        return FromPreset(nameOrPath);
    }
}
