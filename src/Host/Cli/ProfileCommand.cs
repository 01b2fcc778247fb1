namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.Globalization;
using FlexGen.Actors.Benchmark;
using FlexGen.Actors.Engine;
using FlexGen.Host.Hosting;
using FlexGen.Tensors;
using FlexGen.Tensors.Planning;

/// <summary>
/// <c>flexgen profile</c>: measures this machine's constants of FlexLLMGen's cost model (links through the tiers, matmul
/// rates in the compute dtype) and writes them as the hardware JSON <c>flexgen plan --hardware</c> reads.
/// </summary>
public static class ProfileCommand
{
    public static Command Build()
    {
        var output = new Option<string>("--output", "-o")
        {
            Description = "Where to write the hardware JSON.",
            DefaultValueFactory = _ => "hardware.json",
        };
        var dir = new Option<string?>("--offload-dir") { Description = "Folder on the disk to measure (default: the system temp folder)." };
        var size = new Option<int>("--size-mb") { Description = "MiB per link transfer.", DefaultValueFactory = _ => 256 };
        var span = new Option<int?>("--disk-span-gb")
        {
            Description = "GiB of distinct transfers the disk's sustained read and write rates run over (default: 8 transfers). " +
                "On a VM a span the host caches reads 2-5x faster than a model larger than that cache streams: give at least the bytes a run reads from disk.",
            HelpName = "GIB",
        };
        var seconds = new Option<double>("--seconds") { Description = "Seconds per constant (the best repetition counts).", DefaultValueFactory = _ => 1.5 };
        var dtype = new Option<string?>("--compute-dtype") { Description = "float32 | bfloat16 | float16 (default: float16 with CUDA, float32 on the CPU)." };
        var direct = PolicyFlags.Bool("--direct-io", true, "Read and write the disk with O_DIRECT");
        var threads = GenerationFlags.ComputeThreadsOption();
        var command = new Command("profile",
            "Measure this machine's constants of FlexLLMGen's cost model (bytes/s of each link, FLOP/s of matmuls) and write them " +
            "as a hardware JSON for plan --hardware.")
        {
            output, dir, size, span, seconds, dtype, direct, threads,
        };
        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            int mib = parse.GetValue(size);
            if (mib is < 1 or > 65536) throw new UsageException($"--size-mb {mib}: must be within [1, 65536].");
            int? spanGib = parse.GetValue(span);
            if (spanGib is < 1 or > 1024) throw new UsageException($"--disk-span-gb {spanGib}: must be within [1, 1024].");
            int spanTransfers = spanGib is { } gib ? (int)Math.Max(1, ((long)gib << 30) / ((long)mib << 20)) : HardwareProfileOptions.DefaultDiskSpanTransfers;
            double perMeasure = parse.GetValue(seconds);
            if (!(perMeasure > 0 && perMeasure <= 600)) throw new UsageException($"--seconds {perMeasure}: must be within (0, 600].");
            string folder = parse.GetValue(dir) ?? Path.GetTempPath();
            if (!Directory.Exists(folder)) throw new UsageException($"--offload-dir {folder}: folder not found.");
            string path = parse.GetValue(output)!;
            // Checked and defaulted as generate's flag is (a bad count is named by its flag).
            int computeThreads = new FlexGenOptions { ComputeThreads = parse.GetValue(threads) }.ResolveThreads().ComputeThreads;
            // The matmul rates and task_s hold for the threads they were measured with: measure with the run's.
            TorchRuntime.SetComputeThreads(computeThreads);
            var options = new HardwareProfileOptions(folder, (long)mib << 20, FlexGenSetup.ParseDtype(parse.GetValue(dtype)),
                PolicyFlags.GetBool(parse, direct), perMeasure, DiskSpanTransfers: spanTransfers);
            await console.Error.WriteLineAsync(
                $"profile: {HardwareProfiler.StepCount} measurements, about {perMeasure * 16:0} s (plus start-up); {mib} MiB per transfer, the disk's rates over {spanTransfers} of them, in {Path.GetFullPath(folder)}; {computeThreads} compute thread(s)");
            var progress = new SyncProgress(step => console.Error.WriteLine(
                $"  {step.Name,-18} {Format(step)}  {step.What}"));
            var profile = await Task.Run(() => HardwareProfiler.Measure(options, progress, cancellation), cancellation);
            await File.WriteAllTextAsync(path, profile.ToJson(), cancellation);
            await console.Output.WriteLineAsync($"hardware profile written to {path} (c1, c2, c3: FlexLLMGen's defaults)");
            return ExitCodes.Success;
        });
        return command;
    }

    private static string Format(ProfileStep step) =>
        step.Name.Contains("flops", StringComparison.Ordinal) ? string.Create(CultureInfo.InvariantCulture, $"{step.Value / 1e9,10:0.00} GFLOP/s")
        : step.Name == HardwareProfile.TaskSecondsName ? string.Create(CultureInfo.InvariantCulture, $"{step.Value * 1e3,10:0.000} ms      ")
        : step.Name is HardwareProfile.MatmulShareWhileDiskReadsName or HardwareProfile.DiskShareWhileComputingName ? string.Create(CultureInfo.InvariantCulture, $"{step.Value,10:0.000}         ")
        : string.Create(CultureInfo.InvariantCulture, $"{step.Value / 1e9,10:0.00} GB/s    ");

    /// <summary>Reports on the measuring thread, in order (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class SyncProgress(Action<ProfileStep> report) : IProgress<ProfileStep>
    {
        public void Report(ProfileStep value) => report(value);
    }
}
