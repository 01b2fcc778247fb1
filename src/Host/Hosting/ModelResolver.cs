namespace FlexGen.Host.Hosting;

using FlexGen.Host.Cli;
using FlexGen.Tensors.Models;

/// <summary>A model ready to load: where it is, and its shape.</summary>
public sealed record ResolvedModel(ModelLocation Location, OptConfig Config);

/// <summary>Turns <see cref="FlexGenOptions.Model"/> / <see cref="FlexGenOptions.Path"/> into a model shape and weight location.</summary>
public static class ModelResolver
{
    /// <exception cref="UsageException">Missing folder, unknown or refused preset, unreadable or unsupported config (names it).</exception>
    public static ResolvedModel Resolve(string? model, string? path)
    {
        var location = ModelLocator.Resolve(model, path, IsPreset, OptConfig.PresetNames);
        try
        {
            var config = location.ConfigPath is { } configPath
                ? OptConfig.FromHuggingFaceConfig(configPath)
                : OptConfig.FromPreset(location.Name);
            return new ResolvedModel(location, config);
        }
        catch (Exception ex) when (ex is UnsupportedModelException or UnknownModelException or ModelConfigException)
        {
            throw new UsageException($"--model {model ?? location.Name}: {ex.Message}");
        }
    }

    /// <summary>Whether a name is a preset FlexGen knows (opt-350m included: it is refused with the reason).</summary>
    public static bool IsPreset(string name)
    {
        try
        {
            OptConfig.FromPreset(name);
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
}
