namespace FlexGen.Host.Hosting;

using FlexGen.Host.Cli;
using FlexGen.Tensors.Models;

/// <summary>A model ready to load: where it is, and its shape.</summary>
public sealed record ResolvedModel(ModelLocation Location, ModelConfig Config);

/// <summary>Turns <see cref="FlexGenOptions.Model"/> / <see cref="FlexGenOptions.Path"/> into a model shape and weight location.</summary>
public static class ModelResolver
{
    /// <exception cref="UsageException">Missing folder, unknown or refused preset, unreadable or unsupported config (names it).</exception>
    public static ResolvedModel Resolve(string? model, string? path)
    {
        var location = ModelLocator.Resolve(model, path, ModelFamilies.IsPreset, ModelFamilies.PresetNames);
        try
        {
            var config = location.ConfigPath is { } configPath
                ? ModelFamilies.FromConfigFile(configPath)
                : ModelFamilies.FromPreset(location.Name);
            return new ResolvedModel(location, config);
        }
        catch (Exception ex) when (ex is UnsupportedModelException or UnknownModelException or ModelConfigException)
        {
            throw new UsageException($"--model {model ?? location.Name}: {ex.Message}");
        }
    }

}
