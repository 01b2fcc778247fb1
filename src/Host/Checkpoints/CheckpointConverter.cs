namespace FlexGen.Host.Checkpoints;

using System.Text.Json;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>What one conversion did.</summary>
public sealed record ConversionResult(string OutputFolder, int TensorsWritten, long BytesWritten, bool TiedLmHead, IReadOnlyList<string> IgnoredTensors);

/// <summary>
/// Converts a Hugging Face checkpoint folder (config.json + model.safetensors, sharded or not) of any registered
/// model family into FlexGen's layout: config.json plus one float16 .npy file per weight spec, read from the
/// checkpoint tensor the family's <see cref="CheckpointNaming"/> names. A head the family ties to an input
/// embedding is checked equal to it and not written.
/// </summary>
public static class CheckpointConverter
{
    /// <summary>
    /// Converts into <paramref name="outputFolder"/>, which must be new or empty (see <see cref="CheckFolders"/>). The
    /// files are written into a staging folder beside it and renamed into place at the end, so a conversion that
    /// fails or is cancelled leaves no output folder (an existing empty one stays as it was).
    /// </summary>
    /// <param name="progress">Receives the number of tensors written so far (of <see cref="CountTensors"/>).</param>
    /// <exception cref="ConversionFolderException">The output folder breaks a rule of <see cref="CheckFolders"/>.</exception>
    /// <exception cref="UnsupportedModelException">No family reads it, a variant its family refuses, or an untied head where the family ties it.</exception>
    /// <exception cref="ModelConfigException">config.json cannot be read (names the file and key).</exception>
    /// <exception cref="SafetensorsFormatException">A safetensors file or the index breaks the format (names the file, tensor or shard).</exception>
    /// <exception cref="InvalidDataException">A tensor is missing or has the wrong shape (names it).</exception>
    public static ConversionResult Convert(string hfFolder, string outputFolder, IProgress<long>? progress = null,
        CancellationToken cancellation = default)
    {
        if (!Directory.Exists(hfFolder)) throw new DirectoryNotFoundException($"Checkpoint folder not found: {hfFolder}");
        CheckFolders(hfFolder, outputFolder);
        string configPath = Path.Combine(hfFolder, "config.json");
        var config = ModelFamilies.FromConfigFile(configPath);
        var naming = config.Family.Checkpoint(config);

        using var checkpoint = SafetensorsCheckpoint.Open(hfFolder);
        var specs = DistinctSpecs(config);
        var sources = specs.ToDictionary(s => s.FileName, s => SourceName(checkpoint, naming, s.FileName));
        var used = new HashSet<string>(sources.Values, StringComparer.Ordinal);

        bool hasTiedHead = naming.TiedHead is { } head && checkpoint.Contains(head);
        using var staging = StagingFolder.Beside(CanonicalPath.Of(outputFolder));
        long bytes = 0;
        int done = 0;
        foreach (var spec in specs)
        {
            cancellation.ThrowIfCancellationRequested();
            string source = sources[spec.FileName];
            var entry = checkpoint.GetEntry(source);
            if (!entry.Shape.SequenceEqual(spec.Shape))
                throw new InvalidDataException(
                    $"{checkpoint.Folder}: tensor '{source}' has shape ({string.Join(", ", entry.Shape)}); config.json says ({string.Join(", ", spec.Shape)}).");
            using (var scope = torch.NewDisposeScope())
            {
                var stored = checkpoint.Read(source);
                var half = stored.dtype == torch.ScalarType.Float16 ? stored : stored.to_type(torch.ScalarType.Float16);
                NpyFile.Write(Path.Combine(staging.Path, spec.FileName), half);
                bytes += half.numel() * 2;
            }
            progress?.Report(++done);
        }

        if (hasTiedHead)
        {
            used.Add(naming.TiedHead!);
            CheckTied(checkpoint, naming.TiedHead!, sources[naming.TiedHeadFile!]);
        }
        WriteConfig(configPath, Path.Combine(staging.Path, "config.json"));
        foreach (var file in naming.SideFiles)
        {
            string from = Path.Combine(hfFolder, file);
            if (File.Exists(from)) File.Copy(from, Path.Combine(staging.Path, file));
        }
        cancellation.ThrowIfCancellationRequested();
        staging.Commit();
        var ignored = checkpoint.TensorNames.Where(n => !used.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        return new ConversionResult(outputFolder, done, bytes, hasTiedHead, ignored);
    }

    /// <summary>
    /// Where a conversion may write: not into the checkpoint folder or below it, not into a folder that holds the
    /// checkpoint, not over a file, and only into a new or empty folder, so that no file already there (the
    /// checkpoint's or the user's) is ever replaced. Paths are compared canonically (<see cref="CanonicalPath"/>).
    /// </summary>
    /// <exception cref="ConversionFolderException">Names the output folder and the rule it breaks.</exception>
    public static void CheckFolders(string hfFolder, string outputFolder)
    {
        string checkpoint = CanonicalPath.Of(hfFolder);
        string output = CanonicalPath.Of(outputFolder);
        bool outputInCheckpoint = CanonicalPath.IsSameOrInside(output, checkpoint);
        bool checkpointInOutput = CanonicalPath.IsSameOrInside(checkpoint, output);
        if (outputInCheckpoint || checkpointInOutput)
        {
            string relation = (outputInCheckpoint, checkpointInOutput) switch
            {
                (true, true) => "is the checkpoint folder",
                (true, false) => "is inside the checkpoint folder",
                _ => "holds the checkpoint folder",
            };
            throw new ConversionFolderException(outputFolder, $"{relation} {hfFolder}; the output must be written outside the checkpoint.");
        }
        if (File.Exists(output)) throw new ConversionFolderException(outputFolder, "a file is in the way.");
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
            throw new ConversionFolderException(outputFolder, "is not empty; convert writes only into a new or empty folder, so that no file already there is replaced.");
    }

    /// <summary>How many tensors a conversion of this folder writes (for progress bars).</summary>
    public static int CountTensors(string hfFolder)
    {
        return DistinctSpecs(ModelFamilies.FromConfigFile(Path.Combine(hfFolder, "config.json"))).Count;
    }

    /// <summary>Every stored weight once (a tied output embedding reuses the token embedding's file).</summary>
    private static List<WeightSpec> DistinctSpecs(ModelConfig config)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<WeightSpec>();
        foreach (var layer in config.Layers(sepLayer: true))
            foreach (var w in layer.Weights)
                if (seen.Add(w.FileName)) result.Add(w);
        return result;
    }

    /// <summary>The checkpoint's tensor for a model-folder file: the first of the family's candidate names it holds.</summary>
    private static string SourceName(SafetensorsCheckpoint checkpoint, CheckpointNaming naming, string fileName)
    {
        var candidates = naming.SourceNames(fileName);
        foreach (var candidate in candidates)
            if (checkpoint.Contains(candidate)) return candidate;
        throw new InvalidDataException($"{checkpoint.Folder}: the checkpoint has no tensor '{candidates[0]}' (needed for {fileName}).");
    }

    /// <summary>A family that ties the output head to the token embedding refuses a checkpoint where they differ.</summary>
    private static void CheckTied(SafetensorsCheckpoint checkpoint, string headName, string embedName)
    {
        using var scope = torch.NewDisposeScope();
        var head = checkpoint.Read(headName);
        var embed = checkpoint.Read(embedName);
        if (!head.shape.SequenceEqual(embed.shape) || !head.eq(embed).all().item<bool>())
            throw new UnsupportedModelException(Path.GetFileName(checkpoint.Folder),
                $"{checkpoint.Folder}: '{headName}' differs from '{embedName}'; the model family ties the output projection to the token embedding, so untied heads are not supported.");
    }
    /// <summary>Keeps the Hugging Face config (the project reads it back) and records that weights are now float16.</summary>
    private static void WriteConfig(string sourcePath, string path)
    {
        var copy = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(sourcePath))!;
        copy["dtype"] = "float16";
        if (copy.ContainsKey("torch_dtype")) copy["torch_dtype"] = "float16";
        File.WriteAllText(path, copy.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
