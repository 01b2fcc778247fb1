namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Tensors.Tiers;

/// <summary>Benchmarks of single parts: the disk tier (bench-disk) and, when provided, the pipeline.</summary>
public static class ExtraCommands
{
    public static IEnumerable<Command> Build() => [BenchDisk()];

    private static Command BenchDisk()
    {
        var dir = new Option<string?>("--offload-dir")
        {
            Description = "Folder on the disk to measure (default: the system temp folder).",
        };
        var size = new Option<double>("--size-gb")
        {
            Description = "File size in GiB.",
            DefaultValueFactory = _ => 1.0,
        };
        var command = new Command("bench-disk",
            "Disk tier read/write bandwidth, buffered and O_DIRECT, next to dd on the same file.") { dir, size };
        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            double gib = parse.GetValue(size);
            if (!double.IsFinite(gib) || gib <= 0 || gib > 1024) throw new UsageException($"--size-gb {gib}: must be in (0, 1024].");
            string folder = parse.GetValue(dir) ?? Path.GetTempPath();
            if (!Directory.Exists(folder)) throw new UsageException($"--offload-dir {folder}: folder not found.");
            long bytes = Math.Max(1L << 20, (long)(gib * (1L << 30)));
            await DiskBenchmark.RunAsync(folder, bytes, console.Output, cancellation);
            return ExitCodes.Success;
        });
        return command;
    }
}
