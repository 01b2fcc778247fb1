namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Host.Checkpoints;
using FlexGen.Tensors.Models;

/// <summary><c>flexgen convert &lt;hf-folder&gt; &lt;output-folder&gt;</c>: a Hugging Face checkpoint into FlexGen's layout.</summary>
public static class ConvertCommand
{
    public static Command Build()
    {
        var source = new Argument<string>("hf-folder")
        {
            Description = "Hugging Face checkpoint folder: config.json and model.safetensors (or model.safetensors.index.json with shards).",
        };
        var output = new Argument<string>("output-folder")
        {
            Description = "Model folder to write, new or empty, outside the checkpoint (FlexGen layout: config.json and one float16 .npy per parameter).",
        };
        var command = new Command("convert", "Convert a Hugging Face checkpoint into a FlexGen model folder.")
        {
            source, output,
        };
        command.SetAction((parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            string from = parse.GetValue(source)!;
            string to = parse.GetValue(output)!;
            if (!Directory.Exists(from)) throw new UsageException($"hf-folder {from}: folder not found.");
            if (!File.Exists(Path.Combine(from, "config.json")))
                throw new UsageException($"hf-folder {from}: no config.json (expected a Hugging Face checkpoint folder).");
            if (!SafetensorsCheckpoint.IsPresent(from))
                throw new UsageException(
                    $"hf-folder {from}: no {SafetensorsCheckpoint.SingleFileName} or {SafetensorsCheckpoint.IndexFileName} (only safetensors checkpoints are read).");
            try { CheckpointConverter.CheckFolders(from, to); }
            catch (ConversionFolderException ex) { throw new UsageException($"output-folder {ex.Message}"); }

            int total;
            try { total = CheckpointConverter.CountTensors(from); }
            catch (Exception ex) when (ex is UnsupportedModelException or ModelConfigException) { throw new UsageException(ex.Message); }
            using var progress = console.Progress("convert", total, "tensors");
            var result = CheckpointConverter.Convert(from, to, progress, cancellation);
            progress.Complete();
            console.Output.WriteLine($"wrote {result.TensorsWritten} tensors ({result.BytesWritten / 1e6:F1} MB float16) to {Path.GetFullPath(result.OutputFolder)}");
            console.Output.WriteLine(result.TiedLmHead
                ? "lm_head.weight equals the token embedding: tied, not written"
                : File.Exists(Path.Combine(to, "lm_head.weight"))
                    ? "lm_head.weight: an output projection of its own, written"
                    : "no lm_head.weight: the output projection is the token embedding");
            if (result.IgnoredTensors.Count > 0)
                console.Output.WriteLine($"ignored {result.IgnoredTensors.Count} tensors: {string.Join(", ", result.IgnoredTensors.Take(8))}{(result.IgnoredTensors.Count > 8 ? ", ..." : "")}");
            return Task.FromResult(ExitCodes.Success);
        });
        return command;
    }
}
