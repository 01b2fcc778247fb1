namespace FlexGen.Host.Hosting;

using FlexGen.Tensors.Models;

/// <summary>A model ready to load: where it is, and its shape.</summary>
public sealed record ResolvedModel(ModelLocation Location, ModelConfig Config);

/// <summary>
/// Turns <see cref="FlexGenOptions.Model"/> (a folder or a preset name) and <see cref="FlexGenOptions.Path"/> into a
/// model shape and weight location, as FlexGen does.
/// </summary>
public static class ModelResolver
{
    /// <summary>FlexGen's marker for "no weight files, fill with dummy values".</summary>
    public const string DummyPath = "_DUMMY_";

    /// <summary>
    /// The model shipped next to the binary (the same files the tests use): the one folder under models/ (the first
    /// by name, should there be several), so FlexGen names no model of its own.
    /// </summary>
    /// <exception cref="FlexGenOptionsException">No model folder is bundled (key <c>FlexGen:Model</c>).</exception>
    public static string BundledModelFolder
    {
        get
        {
            string models = Path.Combine(AppContext.BaseDirectory, "models");
            return (Directory.Exists(models) ? Directory.EnumerateDirectories(models).Order(StringComparer.Ordinal).FirstOrDefault() : null)
                ?? throw new FlexGenOptionsException(FlexGenOptionKeys.Model, null, $"no model given and {models} holds no bundled model folder.");
        }
    }

    /// <param name="model">A model folder, or a preset name (with or without its organisation prefix); null: the bundled model.</param>
    /// <param name="path">For a preset: the folder holding "&lt;name&gt;-np" weights, or <see cref="DummyPath"/>.</param>
    /// <exception cref="FlexGenOptionsException">
    /// Missing folder, unknown or refused preset, unreadable or unsupported config, missing preset weights (names the key).
    /// </exception>
    public static ResolvedModel Resolve(string? model, string? path)
    {
        if (string.IsNullOrWhiteSpace(model)) model = BundledModelFolder;
        string expanded = ExpandHome(model);
        if (Directory.Exists(expanded))
        {
            string folder = Path.GetFullPath(expanded);
            if (!File.Exists(Path.Combine(folder, "config.json")))
                throw new FlexGenOptionsException(FlexGenOptionKeys.Model, model,
                    "the folder has no config.json (convert a Hugging Face checkpoint with 'flexgen convert').");
            bool dummy = string.Equals(path, DummyPath, StringComparison.Ordinal);
            var location = new ModelLocation(Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)), folder, dummy ? null : folder);
            return new ResolvedModel(location, Read(model, () => ModelFamilies.FromConfigFile(location.ConfigPath!)));
        }

        if (ModelFamilies.IsPreset(model))
        {
            // The family names the preset as it lists it (organisation prefix stripped, lower case): its weights are "<name>-np".
            var config = Read(model, () => ModelFamilies.FromPreset(model));
            if (path is null || path == DummyPath) return new ResolvedModel(new ModelLocation(config.Name, null, null), config);
            string weights = Path.Combine(ExpandHome(path), $"{config.Name}-np");
            if (!Directory.Exists(weights))
                throw new FlexGenOptionsException(FlexGenOptionKeys.Path, path,
                    $"no weights folder {weights} for preset {config.Name} (use {DummyPath} for dummy weights).");
            return new ResolvedModel(new ModelLocation(config.Name, null, weights), config);
        }

        if (LooksLikePath(model)) throw new FlexGenOptionsException(FlexGenOptionKeys.Model, model, "model folder not found.");
        throw new FlexGenOptionsException(FlexGenOptionKeys.Model, model,
            $"not a folder and not a known preset (presets: {string.Join(", ", ModelFamilies.PresetNames)}).");
    }

    private static ModelConfig Read(string model, Func<ModelConfig> read)
    {
        try
        {
            return read();
        }
        catch (Exception ex) when (ex is UnsupportedModelException or UnknownModelException or ModelConfigException)
        {
            throw new FlexGenOptionsException(FlexGenOptionKeys.Model, model, ex.Message, ex);
        }
    }

    private static bool LooksLikePath(string model) =>
        model.Contains(Path.DirectorySeparatorChar) || model.Contains(Path.AltDirectorySeparatorChar) || model.StartsWith('.')
        || model.StartsWith('~');

    private static string ExpandHome(string path) =>
        path == "~" || path.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.TrimStart('~').TrimStart('/'))
            : path;
}
