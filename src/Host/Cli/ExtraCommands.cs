namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Actors.Benchmark;
using FlexGen.Actors.Engine;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Tiers;

/// <summary>Benchmarks of single parts: the disk tier (bench-disk) and the pipeline's overlap (bench-pipeline).</summary>
public static class ExtraCommands
{
    public static IEnumerable<Command> Build() => [BenchDisk(), BenchPipeline(), ProfileCommand.Build()];

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
            // Refused before the benchmark allocates twice the size in memory.
            if (DiskBenchmark.FreeSpaceShortfall(folder, bytes) is { } shortfall) throw new UsageException($"--size-gb {gib}: {shortfall}.");
            await DiskBenchmark.RunAsync(folder, bytes, console.Output, cancellation);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Command BenchPipeline()
    {
        var defaults = new PipelineBenchmarkOptions();
        var hidden = new Option<int>("--hidden-size") { Description = "Hidden size of the dummy model.", DefaultValueFactory = _ => defaults.HiddenSize };
        var heads = new Option<int>("--heads") { Description = "Attention heads.", DefaultValueFactory = _ => defaults.Heads };
        var blocks = new Option<int>("--blocks") { Description = "Transformer blocks.", DefaultValueFactory = _ => defaults.Blocks };
        var gbs = new Option<int>("--gpu-batch-size")
        {
            Description = "Sequences per GPU batch: sets the compute, not the bytes read, so it balances the two (the run prints the balance).",
            DefaultValueFactory = _ => defaults.GpuBatchSize,
        };
        var ngb = new Option<int>("--num-gpu-batches") { Description = "GPU batches per block.", DefaultValueFactory = _ => defaults.NumGpuBatches };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens.", DefaultValueFactory = _ => defaults.PromptLen };
        var genLen = new Option<int>("--gen-len") { Description = "New tokens.", DefaultValueFactory = _ => defaults.GenLen };
        var disk = new Option<double>("--weights-disk-percent")
        {
            Description = "Weights on disk in percent (the rest on the GPU tier).",
            DefaultValueFactory = _ => defaults.WeightsOnDiskPercent,
        };
        var direct = PolicyFlags.Bool("--direct-io", defaults.DirectIo, "Read and write the disk tier with O_DIRECT");
        var dir = new Option<string?>("--offload-dir") { Description = "Folder for the disk tier (default: a temp folder, deleted after)." };
        var dtype = new Option<string?>("--compute-dtype") { Description = "bfloat16 (default) | float32 (| float16 with CUDA)." };
        var threads = GenerationFlags.ComputeThreadsOption();
        var ioThreads = GenerationFlags.IoThreadsOption();
        var repeats = new Option<int>("--repeats")
        {
            Description = "Measured requests per mode, taken in turns (off on, on off, ...) so that a drift in the disk's or host's speed hits both.",
            DefaultValueFactory = _ => defaults.Repeats,
        };
        var prefetch = new Option<int>("--prefetch-steps") { Description = "How far loads may run ahead of compute.", DefaultValueFactory = _ => defaults.PrefetchSteps };
        var trace = new Option<string?>("--trace") { Description = "Write the overlap-on trace here (Chrome trace JSON; the off trace beside it)." };
        var gpuMem = GenerationFlags.BudgetOption("--gpu-mem", "GPU memory", "the CUDA device's free memory; without CUDA the GPU tier is CPU memory and counts against --cpu-mem");
        var cpuMem = GenerationFlags.BudgetOption("--cpu-mem", "CPU memory", "MemAvailable of /proc/meminfo");
        var diskMem = GenerationFlags.BudgetOption("--disk-mem", "disk", "the free space of the offload folder's file system");
        var command = new Command("bench-pipeline",
            "The same generation with overlap off and on through the actor pipeline: tokens/s, per-tier busy time, schedule efficiency.")
        {
            hidden, heads, blocks, gbs, ngb, promptLen, genLen, disk, direct, dir, dtype, threads, ioThreads, repeats, prefetch, trace, gpuMem, cpuMem, diskMem,
        };
        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            foreach (var (option, min) in new[] { (hidden, 1), (heads, 1), (blocks, 1), (gbs, 1), (ngb, 1), (promptLen, 1), (genLen, 1), (repeats, 1), (prefetch, 0) })
                if (parse.GetValue(option) < min) throw new UsageException($"{option.Name} {parse.GetValue(option)}: must be >= {min}.");
            if (parse.GetValue(hidden) % parse.GetValue(heads) != 0)
                throw new UsageException($"--hidden-size {parse.GetValue(hidden)} is not a multiple of --heads {parse.GetValue(heads)}.");
            double diskPercent = parse.GetValue(disk);
            if (!(diskPercent >= 0 && diskPercent <= 100)) throw new UsageException($"--weights-disk-percent {diskPercent}: must be within [0, 100].");
            // Checked as generate's flag is (a bad count is named by its flag); an unset compute count stays null so the
            // engine's rule for the policy decides (EngineSettings.ComputeThreadsFor).
            var (_, diskThreads) = new FlexGenOptions { ComputeThreads = parse.GetValue(threads), IoThreads = parse.GetValue(ioThreads) }.ResolveThreads();
            string? userDir = parse.GetValue(dir);
            if (userDir is not null && !Directory.Exists(userDir)) throw new UsageException($"--offload-dir {userDir}: folder not found.");
            string folder = userDir ?? Path.Combine(Path.GetTempPath(), OffloadFolders.NewName("flexgen-bench"));
            var overrides = new TierCapacities(GenerationFlags.BudgetBytes(parse, gpuMem), GenerationFlags.BudgetBytes(parse, cpuMem), GenerationFlags.BudgetBytes(parse, diskMem));
            var budgets = TierBudgets.Detect(folder, Tensors.TorchRuntime.CudaAvailable, overrides, ("--gpu-mem", "--cpu-mem", "--disk-mem"));
            var options = new PipelineBenchmarkOptions
            {
                HiddenSize = parse.GetValue(hidden),
                Heads = parse.GetValue(heads),
                Blocks = parse.GetValue(blocks),
                GpuBatchSize = parse.GetValue(gbs),
                NumGpuBatches = parse.GetValue(ngb),
                PromptLen = parse.GetValue(promptLen),
                GenLen = parse.GetValue(genLen),
                WeightsOnDiskPercent = diskPercent,
                DirectIo = PolicyFlags.GetBool(parse, direct),
                OffloadDirectory = folder,
                Compute = parse.GetValue(dtype) is { } name ? new ComputeSettings(FlexGenSetup.ParseDtype(name)) : defaults.Compute,
                ComputeThreads = parse.GetValue(threads),
                IoThreads = diskThreads,
                Repeats = parse.GetValue(repeats),
                PrefetchSteps = parse.GetValue(prefetch),
                TracePath = parse.GetValue(trace),
                Budgets = budgets,
                AkkaLogLevel = console.Verbose ? "INFO" : "WARNING",
            };
            if (FlexGenSetup.ComputeDtypeWarning(options.Compute.Dtype, Tensors.TorchRuntime.CudaAvailable, Tensors.TorchRuntime.CpuMultipliesBFloat16,
                Tensors.TorchRuntime.CpuBFloat16ThroughMkl) is { } warning)
                console.Error.WriteLine(warning);
            try
            {
                await PipelineBenchmark.RunAsync(options, console.Output, cancellation);
            }
            finally
            {
                if (userDir is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
            return ExitCodes.Success;
        });
        return command;
    }
}
