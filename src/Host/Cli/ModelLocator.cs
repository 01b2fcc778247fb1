namespace FlexGen.Host.Cli;

/// <summary>Where a model's shape and weights come from.</summary>
/// <param name="Name">Model name (folder name or preset name).</param>
/// <param name="Folder">The model folder holding config.json (and usually the weights); null for a bare preset.</param>
/// <param name="WeightsFolder">FlexGen-layout weights (one .npy per parameter); null for dummy weights.</param>
public sealed record ModelLocation(string Name, string? Folder, string? WeightsFolder)
{
    public bool DummyWeights => WeightsFolder is null;

    public string? ConfigPath => Folder is null ? null : Path.Combine(Folder, "config.json");
}

/// <summary>Resolves <c>--model</c> (a folder or a preset name) and <c>--path</c> as FlexGen does.</summary>
public static class ModelLocator
{
    /// <summary>FlexGen's marker for "no weight files, fill with dummy values".</summary>
    public const string DummyPath = "_DUMMY_";

    /// <summary>
    /// The model shipped next to the binary (the same files the tests use): the one folder under models/ (the first
    /// by name, should there be several), so the CLI names no model of its own.
    /// </summary>
    public static string BundledModelFolder =>
        Directory.EnumerateDirectories(Path.Combine(AppContext.BaseDirectory, "models")).Order(StringComparer.Ordinal).FirstOrDefault()
        ?? throw new UsageException($"No bundled model: {Path.Combine(AppContext.BaseDirectory, "models")} holds no model folder; pass --model.");

    /// <param name="model">A model folder, or a preset name (with or without its organisation prefix); null: the bundled model.</param>
    /// <param name="path">For a preset: the folder holding "&lt;name&gt;-np" weights, or _DUMMY_.</param>
    /// <param name="isPreset">Whether a name is a known preset (of a registered model family).</param>
    public static ModelLocation Resolve(string? model, string? path, Func<string, bool> isPreset, IEnumerable<string> presetNames)
    {
        if (string.IsNullOrWhiteSpace(model)) model = BundledModelFolder;
        string expanded = ExpandHome(model);
        if (Directory.Exists(expanded))
        {
            string folder = Path.GetFullPath(expanded);
            if (!File.Exists(Path.Combine(folder, "config.json")))
                throw new UsageException($"--model {model}: the folder has no config.json (convert a Hugging Face checkpoint with 'flexgen convert').");
            bool dummy = string.Equals(path, DummyPath, StringComparison.Ordinal);
            return new ModelLocation(Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)), folder, dummy ? null : folder);
        }

        string name = PresetName(model);
        if (isPreset(name))
        {
            if (path is null || path == DummyPath) return new ModelLocation(name, null, null);
            string weights = Path.Combine(ExpandHome(path), $"{name}-np");
            if (!Directory.Exists(weights))
                throw new UsageException($"--path {path}: no weights folder {weights} for preset {name} (use --path {DummyPath} for dummy weights).");
            return new ModelLocation(name, null, weights);
        }

        if (LooksLikePath(model))
            throw new UsageException($"--model {model}: model folder not found.");
        throw new UsageException(
            $"--model {model}: not a folder and not a known preset (presets: {string.Join(", ", presetNames)}).");
    }

    /// <summary>A preset name as the families list it: lower case, without the "facebook/" organisation prefix.</summary>
    public static string PresetName(string model)
    {
        string name = model.Trim();
        int slash = name.LastIndexOf('/');
        if (slash >= 0 && name.StartsWith("facebook/", StringComparison.OrdinalIgnoreCase)) name = name[(slash + 1)..];
        return name.ToLowerInvariant();
    }

    private static bool LooksLikePath(string model) =>
        model.Contains(Path.DirectorySeparatorChar) || model.Contains(Path.AltDirectorySeparatorChar) || model.StartsWith('.')
        || model.StartsWith('~');

    private static string ExpandHome(string path) =>
        path == "~" || path.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.TrimStart('~').TrimStart('/'))
            : path;
}
