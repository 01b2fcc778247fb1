namespace FlexGen.Host.Checkpoints;

using System.Text.Json;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>What one conversion did.</summary>
public sealed record ConversionResult(string OutputFolder, int TensorsWritten, long BytesWritten, bool TiedLmHead, IReadOnlyList<string> IgnoredTensors);

/// <summary>
/// Converts a Hugging Face OPT checkpoint folder (config.json + model.safetensors, sharded or not) into FlexGen's
/// layout: config.json plus one float16 .npy file per parameter, named after the Hugging Face parameter without
/// the leading "model." and with "decoder.final_layer_norm" renamed "decoder.layer_norm" (as FlexGen's
/// download_opt_weights does). The output embedding is tied to the token embedding, as in FlexGen.
/// </summary>
public static class OptCheckpointConverter
{
    private const string LmHead = "lm_head.weight";

    /// <param name="progress">Receives the number of tensors written so far (of <see cref="CountTensors"/>).</param>
    /// <exception cref="UnsupportedModelException">Not OPT, an OPT variant FlexGen refuses, or an untied lm_head.</exception>
    /// <exception cref="ModelConfigException">config.json cannot be read (names the file and key).</exception>
    /// <exception cref="InvalidDataException">A tensor is missing or has the wrong shape (names it).</exception>
    public static ConversionResult Convert(string hfFolder, string outputFolder, IProgress<long>? progress = null,
        CancellationToken cancellation = default)
    {
        if (!Directory.Exists(hfFolder)) throw new DirectoryNotFoundException($"Checkpoint folder not found: {hfFolder}");
        string configPath = Path.Combine(hfFolder, "config.json");
        var config = OptConfig.FromHuggingFaceConfig(configPath);
        if (Path.GetFullPath(hfFolder) == Path.GetFullPath(outputFolder))
            throw new ArgumentException($"The output folder must differ from the checkpoint folder ({hfFolder}).", nameof(outputFolder));

        using var checkpoint = SafetensorsCheckpoint.Open(hfFolder);
        var specs = DistinctSpecs(config);
        var sources = specs.ToDictionary(s => s.FileName, s => SourceName(checkpoint, s.FileName));
        var used = new HashSet<string>(sources.Values, StringComparer.Ordinal);

        bool hasLmHead = checkpoint.Contains(LmHead);
        Directory.CreateDirectory(outputFolder);
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
                NpyFile.Write(Path.Combine(outputFolder, spec.FileName), half);
                bytes += half.numel() * 2;
            }
            progress?.Report(++done);
        }

        if (hasLmHead)
        {
            used.Add(LmHead);
            CheckTied(checkpoint, sources["decoder.embed_tokens.weight"]);
        }
        WriteConfig(configPath, Path.Combine(outputFolder, "config.json"));
        foreach (var file in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" })
        {
            string from = Path.Combine(hfFolder, file);
            if (File.Exists(from)) File.Copy(from, Path.Combine(outputFolder, file), overwrite: true);
        }
        var ignored = checkpoint.TensorNames.Where(n => !used.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        return new ConversionResult(outputFolder, done, bytes, hasLmHead, ignored);
    }

    /// <summary>How many tensors a conversion of this folder writes (for progress bars).</summary>
    public static int CountTensors(string hfFolder)
    {
        return DistinctSpecs(OptConfig.FromHuggingFaceConfig(Path.Combine(hfFolder, "config.json"))).Count;
    }

    /// <summary>Every stored weight once (the output embedding reuses the token embedding).</summary>
    private static List<WeightSpec> DistinctSpecs(OptConfig config)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<WeightSpec>();
        foreach (var layer in OptWeightSpecs.Layers(config, sepLayer: true))
            foreach (var w in layer.Weights)
                if (seen.Add(w.FileName)) result.Add(w);
        return result;
    }

    /// <summary>The checkpoint's name for a FlexGen file name ("model." prefix or not; final_layer_norm).</summary>
    private static string SourceName(SafetensorsCheckpoint checkpoint, string flexGenName)
    {
        string hfName = flexGenName.StartsWith("decoder.layer_norm.", StringComparison.Ordinal)
            ? "decoder.final_layer_norm." + flexGenName["decoder.layer_norm.".Length..]
            : flexGenName;
        foreach (var candidate in new[] { "model." + hfName, hfName })
            if (checkpoint.Contains(candidate)) return candidate;
        throw new InvalidDataException($"{checkpoint.Folder}: the checkpoint has no tensor 'model.{hfName}' (needed for {flexGenName}).");
    }

    /// <summary>FlexGen always ties the output projection to the token embedding; refuse a checkpoint where they differ.</summary>
    private static void CheckTied(SafetensorsCheckpoint checkpoint, string embedName)
    {
        using var scope = torch.NewDisposeScope();
        var head = checkpoint.Read(LmHead);
        var embed = checkpoint.Read(embedName);
        if (!head.shape.SequenceEqual(embed.shape) || !head.eq(embed).all().item<bool>())
            throw new UnsupportedModelException(Path.GetFileName(checkpoint.Folder),
                $"{checkpoint.Folder}: '{LmHead}' differs from '{embedName}'; FlexGen ties the output projection to the token embedding, so untied heads are not supported.");
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
