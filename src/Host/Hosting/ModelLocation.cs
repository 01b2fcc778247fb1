namespace FlexGen.Host.Hosting;

/// <summary>Where a model's shape and weights come from.</summary>
/// <param name="Name">Model name (folder name or preset name).</param>
/// <param name="Folder">The model folder holding config.json (and usually the weights); null for a bare preset.</param>
/// <param name="WeightsFolder">FlexGen-layout weights (one .npy per parameter); null for dummy weights.</param>
public sealed record ModelLocation(string Name, string? Folder, string? WeightsFolder)
{
    public bool DummyWeights => WeightsFolder is null;

    public string? ConfigPath => Folder is null ? null : Path.Combine(Folder, "config.json");
}
