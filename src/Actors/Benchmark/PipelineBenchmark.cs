namespace FlexGen.Actors.Benchmark;

using FlexGen.Tensors.Tiers;
using System.Collections.Immutable;
using System.Globalization;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;

/// <summary>
/// The overlap benchmark's knobs. Defaults: a dummy-weights model of the first registered family (hidden 1024, 8 blocks) whose
/// weights all live on disk and are read with O_DIRECT each decode step, computed in bfloat16. Overlap pays most when the
/// disk reads and the compute take about as long with overlap off (perfect overlap then halves the time):
/// <see cref="PipelineBenchmark.BalancedBatch"/> picks the batch for that from the machine's hardware profile, and the run
/// reports the measured balance.
/// </summary>
public sealed record PipelineBenchmarkOptions
{
    public int HiddenSize { get; init; } = 1024;

    public int Heads { get; init; } = 16;

    public int Blocks { get; init; } = 8;

    public int VocabSize { get; init; } = 4096;

    public int GpuBatchSize { get; init; } = 12;

    public int NumGpuBatches { get; init; } = 2;

    public int PromptLen { get; init; } = 4;

    public int GenLen { get; init; } = 12;

    /// <summary>Weights on disk in percent (the rest on the GPU tier).</summary>
    public double WeightsOnDiskPercent { get; init; } = 100;

    public bool DirectIo { get; init; } = true;

    public string OffloadDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "flexgen-bench");

    /// <summary>
    /// bfloat16: the disk holds the weights in the compute dtype, so a read is only I/O. In float32 the disk tier widens each
    /// float16 chunk on its I/O threads, CPU work that takes the compute's cores while they overlap (on 2 cores the
    /// widening and the matmuls share them), so overlap would measure core sharing more than I/O hidden behind compute.
    /// </summary>
    public ComputeSettings Compute { get; init; } = ComputeSettings.BFloat16;

    /// <summary>libtorch intra-op threads for the run (<see cref="EngineSettings.ComputeThreads"/>); restored afterwards.</summary>
    public int ComputeThreads { get; init; } = TorchRuntime.DefaultComputeThreads;

    /// <summary>The disk tier's I/O threads (<see cref="DiskTierSettings.IoThreads"/>).</summary>
    public int IoThreads { get; init; } = EngineSettings.DefaultTiers.Disk.IoThreads;

    /// <summary>How far loads may run ahead of compute (see PipelineSettings.PrefetchSteps).</summary>
    public int PrefetchSteps { get; init; } = 2;

    /// <summary>Akka's log level (OFF, ERROR, WARNING, INFO, DEBUG); its lines go to standard error, never into the results.</summary>
    public string AkkaLogLevel { get; init; } = "WARNING";

    /// <summary>When set, the overlap-on trace is written here as Chrome trace JSON (and the off trace beside it).</summary>
    public string? TracePath { get; init; }

    /// <summary>What each tier may hold (homes and working buffers); null: this machine's (see <see cref="EngineSettings.Budgets"/>).</summary>
    public TierBudgets? Budgets { get; init; }

    /// <summary>The family whose layers are benchmarked; default: the first registered.</summary>
    public IModelFamily Family { get; init; } = ModelFamilies.All[0];

    public ModelConfig Model => Family.OfSize(
        $"bench-h{HiddenSize}-l{Blocks}", Blocks, HiddenSize, Heads, VocabSize, Math.Max(64, PromptLen + GenLen));

    public Policy Policy(bool overlap) => new()
    {
        GpuBatchSize = GpuBatchSize,
        NumGpuBatches = NumGpuBatches,
        WGpuPercent = 100 - WeightsOnDiskPercent,
        WCpuPercent = 0,
        CacheGpuPercent = 100,
        CacheCpuPercent = 0,
        ActGpuPercent = 100,
        ActCpuPercent = 0,
        Overlap = overlap,
        SepLayer = true,
    };
}

/// <summary>The cost model's decode layer step of a benchmark config with overlap off: its compute and its disk reads.</summary>
public sealed record PipelineBalance(int GpuBatchSize, double ComputeSeconds, double DiskSeconds)
{
    /// <summary>Disk over compute: 1 is balanced, above 1 disk-bound.</summary>
    public double DiskOverCompute => DiskSeconds / ComputeSeconds;
}

/// <summary>One run of the benchmark.</summary>
public sealed record PipelineBenchmarkRun(bool Overlap, int Tokens, PhaseTimings Timings, TraceSummary Summary)
{
    public double TokensPerSecond => Tokens / Timings.Total.TotalSeconds;

    /// <summary>Busy time of the compute tiers (GPU and CPU compute).</summary>
    public TimeSpan ComputeBusy => TimeSpan.FromTicks(Summary.Tiers.Where(t => t.Tier.IsCompute()).Sum(t => t.Busy.Ticks));

    /// <summary>Busy time of the disk tier's actor (its reads, and in float32 their widening).</summary>
    public TimeSpan DiskBusy => Summary.Of(PipelineActorKind.DiskIo)?.Busy ?? TimeSpan.Zero;
}

/// <summary>Both runs and how they compare.</summary>
public sealed record PipelineBenchmarkResult(PipelineBenchmarkRun Off, PipelineBenchmarkRun On)
{
    public double Speedup => On.TokensPerSecond / Off.TokensPerSecond;

    /// <summary>Disk busy over compute busy with overlap off: near 1 the config is balanced, and overlap can come near 2x.</summary>
    public double DiskOverCompute => Off.DiskBusy / Off.ComputeBusy;

    /// <summary>
    /// The speedup perfect overlap would give at the overlap-off tier times: the off run's wall over its busiest tier
    /// (its schedule efficiency). A run can beat it when its tiers themselves get faster with overlap on.
    /// </summary>
    public double OverlapBound => Off.Summary.ScheduleEfficiency;

    /// <summary>The targets: overlap on at least 1.5x faster, with schedule efficiency at most 1.15.</summary>
    public bool MeetsTargets => Speedup >= 1.5 && On.Summary.ScheduleEfficiency <= 1.15;
}

/// <summary>
/// Runs the same generation with overlap off and on through the actor pipeline and prints tokens/s, per-tier busy
/// time and schedule efficiency of both (a command, not a test: the host wires it to a CLI subcommand).
/// </summary>
public static class PipelineBenchmark
{
    public static async Task<PipelineBenchmarkResult> RunAsync(PipelineBenchmarkOptions options, TextWriter output, CancellationToken cancellationToken = default)
    {
        var c = CultureInfo.InvariantCulture;
        var model = options.Model;
        long layerBytes = 12L * model.HiddenSize * model.HiddenSize * 2;
        output.WriteLine(string.Format(c, "model {0}: {1} blocks, hidden {2}, ~{3:F1} MB of 16-bit weights per block, {4:F0}% on disk ({5})",
            model.Name, model.NumBlocks, model.HiddenSize, layerBytes / 1e6, options.WeightsOnDiskPercent, options.DirectIo ? "O_DIRECT" : "buffered"));
        output.WriteLine(string.Format(c, "batch {0} x {1} GPU batches, prompt {2}, gen {3}, compute {4} on {5} thread(s), {6} disk I/O thread(s), prefetch {7} step(s)",
            options.GpuBatchSize, options.NumGpuBatches, options.PromptLen, options.GenLen, options.Compute.Dtype,
            options.ComputeThreads, options.IoThreads, options.PrefetchSteps));

        // The budgets refuse a model or batch that does not fit before any actor system starts (each backend checks again).
        var planned = SettingsOf(options, overlap: true);
        PlacementPlan.Create(model, planned.Policy, options.PromptLen, options.GenLen, budgets: planned.ResolveBudgets(),
            computeDtypeBytes: planned.ComputeDtypeBytes, computesOnCpu: planned.GpuComputesOnCpu);

        // Each backend sets the run's threads; the caller's come back afterwards.
        int threads = TorchRuntime.ComputeThreads;

        PipelineBenchmarkRun off, on;
        try
        {
            off = await RunOnceAsync(options, overlap: false, output, cancellationToken).ConfigureAwait(false);
            on = await RunOnceAsync(options, overlap: true, output, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            TorchRuntime.SetComputeThreads(threads);
        }

        var result = new PipelineBenchmarkResult(off, on);
        output.WriteLine();
        output.WriteLine(string.Format(c, "balance with overlap off: compute busy {0:F0} ms, disk busy {1:F0} ms, disk / compute {2:F2} (balanced near 1); perfect overlap: at most {3:F2}x",
            off.ComputeBusy.TotalMilliseconds, off.DiskBusy.TotalMilliseconds, result.DiskOverCompute, result.OverlapBound));
        // Each tier's time growing with overlap on shows the two sharing something (cores, memory bandwidth, the disk).
        output.WriteLine(string.Format(c, "with overlap on: compute busy {0:F0} ms ({1:+0;-0}%), disk busy {2:F0} ms ({3:+0;-0}%)",
            on.ComputeBusy.TotalMilliseconds, Percent(on.ComputeBusy, off.ComputeBusy), on.DiskBusy.TotalMilliseconds, Percent(on.DiskBusy, off.DiskBusy)));
        output.WriteLine(string.Format(c, "speedup overlap on / off: {0:F2}x (target >= 1.5), schedule efficiency with overlap {1:F3} (target <= 1.15): {2}",
            result.Speedup, on.Summary.ScheduleEfficiency, result.MeetsTargets ? "targets met" : "targets NOT met"));
        return result;
    }

    /// <summary>
    /// The cost model's overlap-off decode layer step of <paramref name="options"/> on <paramref name="hardware"/>: the
    /// compute and the disk reads (the weights' disk -> CPU link).
    /// </summary>
    public static PipelineBalance Predict(PipelineBenchmarkOptions options, HardwareProfile hardware)
    {
        ArgumentNullException.ThrowIfNull(options);
        var settings = SettingsOf(options, overlap: false);
        var bounds = PolicyCost.Predict(options.Model, settings.Policy, options.PromptLen, options.GenLen, hardware, settings.GpuComputesOnCpu).Bounds;
        double Of(string name) => bounds.Single(b => b.Phase == "decode" && b.Name == name).SecondsPerStep;
        return new PipelineBalance(options.GpuBatchSize, Of("compute"), Of("disk->cpu"));
    }

    /// <summary>
    /// The GPU batch size (1 .. <paramref name="maxGpuBatchSize"/>, the other knobs as given) whose predicted decode step has
    /// its compute closest to its disk reads: the batch changes the compute, not the weights read per step.
    /// </summary>
    public static PipelineBalance BalancedBatch(PipelineBenchmarkOptions options, HardwareProfile hardware, int maxGpuBatchSize = 256) =>
        Enumerable.Range(1, maxGpuBatchSize)
            .Select(batch => Predict(options with { GpuBatchSize = batch }, hardware))
            .MinBy(p => Math.Abs(Math.Log(p.DiskOverCompute)))!;

    private static double Percent(TimeSpan value, TimeSpan reference) =>
        reference > TimeSpan.Zero ? 100 * (value / reference - 1) : 0;

    private static EngineSettings SettingsOf(PipelineBenchmarkOptions options, bool overlap) => new()
    {
        Model = options.Model,
        DummyWeights = true,
        Policy = options.Policy(overlap),
        OffloadDirectory = options.OffloadDirectory,
        Tiers = new TierSettings { Disk = new DiskTierSettings(DirectIo: options.DirectIo, IoThreads: options.IoThreads) },
        Budgets = options.Budgets,
        Compute = options.Compute,
        CpuCompute = options.Compute,
        ComputeThreads = options.ComputeThreads,
        Pipeline = new Actors.PipelineSettings(PrefetchSteps: options.PrefetchSteps),
    };

    private static async Task<PipelineBenchmarkRun> RunOnceAsync(PipelineBenchmarkOptions options, bool overlap, TextWriter output, CancellationToken cancellationToken)
    {
        OffloadFolders.CreatePrivate(options.OffloadDirectory);
        var settings = SettingsOf(options, overlap);
        await using var flexgen = FlexGenSystem.Start(settings, overlap ? "bench-overlap" : "bench-serial",
            Hosting.StandardErrorLogging.Config(options.AkkaLogLevel));
        int rows = options.GpuBatchSize * options.NumGpuBatches;
        var random = new Random(5);
        var prompts = Enumerable.Range(0, rows)
            .Select(_ => Enumerable.Range(0, options.PromptLen).Select(_ => (long)random.Next(3, options.VocabSize)).ToImmutableArray())
            .ToImmutableArray();

        // Warm-up (loads the weights, touches every code path once), then the measured request.
        await flexgen.GenerateAsync(new GenerateRequest { PromptIds = prompts, Generation = new(2) }, cancellationToken).ConfigureAwait(false);
        var result = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = prompts, Generation = new(options.GenLen) }, cancellationToken).ConfigureAwait(false);

        var run = new PipelineBenchmarkRun(overlap, rows * options.GenLen, result.Timings, result.Trace.Summarize());
        var c = CultureInfo.InvariantCulture;
        output.WriteLine();
        output.WriteLine(string.Format(c, "overlap {0}: {1:F1} tokens/s (prefill {2:F0} ms, decode {3:F0} ms)",
            overlap ? "on" : "off", run.TokensPerSecond, result.Timings.Prefill.TotalMilliseconds, result.Timings.Decode.TotalMilliseconds));
        run.Summary.WriteTo(output);
        if (options.TracePath is { } path)
        {
            var file = overlap ? path : Path.ChangeExtension(path, null) + ".overlap-off.json";
            result.Trace.WriteChromeJson(file);
            output.WriteLine($"trace: {file}");
        }

        return run;
    }
}
