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
using FlexGen.Tensors.Policies;

/// <summary>
/// The overlap benchmark's knobs. Defaults: a dummy-weights model of the first registered family (hidden 1024, 8 blocks) whose
/// weights all live on disk and are read with O_DIRECT each decode step, computed in bfloat16. Overlap pays most when the
/// disk reads and the compute take about as long with overlap off (perfect overlap then halves the time). The batch
/// (<see cref="GpuBatchSize"/>) sets the compute without changing the bytes read per step, so it is the knob that balances
/// the two; the run prints the measured balance, which says which way to move it on another machine.
/// </summary>
public sealed record PipelineBenchmarkOptions
{
    public int HiddenSize { get; init; } = 1024;

    public int Heads { get; init; } = 16;

    public int Blocks { get; init; } = 8;

    public int VocabSize { get; init; } = 4096;

    /// <summary>
    /// 64 x 2 GPU batches: balanced on a 2-core VM (O_DIRECT reads ~1.3 GB/s, bfloat16 matmuls): with overlap off the
    /// compute and the disk reads took 4.5-5.5 s each over 12 tokens (disk / compute 0.9-1.1), where 12 x 2 was disk-bound
    /// (disk / compute ~2.4, so overlap could give at most ~1.4x) and the cost model's balance (129 x 2) compute-bound (0.66).
    /// </summary>
    public int GpuBatchSize { get; init; } = 64;

    public int NumGpuBatches { get; init; } = 2;

    public int PromptLen { get; init; } = 4;

    public int GenLen { get; init; } = 12;

    /// <summary>Weights on disk in percent (the rest on the GPU tier).</summary>
    public double WeightsOnDiskPercent { get; init; } = 100;

    public bool DirectIo { get; init; } = true;

    public string OffloadDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "flexgen-bench");

    /// <summary>
    /// bfloat16: the disk holds the weights in the compute dtype, so a read is only I/O and the compute's time is only
    /// compute. In float32 the compute also converts each float16 weight it was streamed, so the two modes' balance
    /// would hinge on that conversion's speed more than on I/O hidden behind compute.
    /// </summary>
    public ComputeSettings Compute { get; init; } = ComputeSettings.BFloat16;

    /// <summary>
    /// libtorch intra-op threads for the run (<see cref="EngineSettings.ComputeThreads"/>; null: the default rule for
    /// its policy, <see cref="EngineSettings.ComputeThreadsFor"/>); restored afterwards.
    /// </summary>
    public int? ComputeThreads { get; init; }

    /// <summary>The disk tier's I/O threads (<see cref="DiskTierSettings.IoThreads"/>).</summary>
    public int IoThreads { get; init; } = EngineSettings.DefaultTiers.Disk.IoThreads;

    /// <summary>
    /// Measured requests per mode, taken in turns (off on, on off, off on, ...): the disk's and the host's speed drift by
    /// tens of percent over seconds on a shared VM, and turns let a drift hit both modes alike instead of one.
    /// </summary>
    public int Repeats { get; init; } = 3;

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

/// <summary>One mode's measured requests of the benchmark, their timings and trace summaries summed.</summary>
public sealed record PipelineBenchmarkRun(bool Overlap, int Tokens, PhaseTimings Timings, TraceSummary Summary)
{
    public double TokensPerSecond => Tokens / Timings.Total.TotalSeconds;

    /// <summary>Busy time of the compute tiers (GPU and CPU compute).</summary>
    public TimeSpan ComputeBusy => TimeSpan.FromTicks(Summary.Tiers.Where(t => t.Tier.IsCompute()).Sum(t => t.Busy.Ticks));

    /// <summary>Busy time of the disk tier's actor (its reads).</summary>
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
        var planned = SettingsOf(options, overlap: true);
        long layerBytes = 12L * model.HiddenSize * model.HiddenSize * 2;
        output.WriteLine(string.Format(c, "model {0}: {1} blocks, hidden {2}, ~{3:F1} MB of 16-bit weights per block, {4:F0}% on disk ({5})",
            model.Name, model.NumBlocks, model.HiddenSize, layerBytes / 1e6, options.WeightsOnDiskPercent, options.DirectIo ? "O_DIRECT" : "buffered"));
        output.WriteLine(string.Format(c, "batch {0} x {1} GPU batches, prompt {2}, gen {3}, compute {4} on {5} thread(s), {6} disk I/O thread(s), prefetch {7} step(s), {8} request(s) per mode in turns",
            options.GpuBatchSize, options.NumGpuBatches, options.PromptLen, options.GenLen, options.Compute.Dtype,
            planned.ComputeThreadsFor(planned.Policy), options.IoThreads, options.PrefetchSteps, options.Repeats));

        // The budgets refuse a model or batch that does not fit before any actor system starts (each backend checks again).
        PlacementPlan.Create(model, planned.Policy, options.PromptLen, options.GenLen, budgets: planned.ResolveBudgets(),
            computeDtypeBytes: planned.ComputeDtypeBytes, computesOnCpu: planned.GpuComputesOnCpu);

        // Each backend sets the run's threads; the caller's come back afterwards.
        int threads = TorchRuntime.ComputeThreads;

        var measured = new Dictionary<bool, List<GenerationResult>> { [false] = [], [true] = [] };
        try
        {
            await using var serial = await StartAsync(options, overlap: false, cancellationToken).ConfigureAwait(false);
            await using var overlapped = await StartAsync(options, overlap: true, cancellationToken).ConfigureAwait(false);
            for (int turn = 0; turn < options.Repeats; turn++)
            {
                foreach (bool overlap in turn % 2 == 0 ? [false, true] : new[] { true, false })
                {
                    var one = await MeasureAsync(overlap ? overlapped : serial, options, cancellationToken).ConfigureAwait(false);
                    measured[overlap].Add(one);
                    output.WriteLine(string.Format(c, "overlap {0} #{1}: {2:F1} tokens/s (prefill {3:F0} ms, decode {4:F0} ms)",
                        overlap ? "on" : "off", turn + 1, TokensOf(options) / one.Timings.Total.TotalSeconds,
                        one.Timings.Prefill.TotalMilliseconds, one.Timings.Decode.TotalMilliseconds));
                }
            }
        }
        finally
        {
            TorchRuntime.SetComputeThreads(threads);
        }

        var off = Summed(options, overlap: false, measured[false], output);
        var on = Summed(options, overlap: true, measured[true], output);
        var result = new PipelineBenchmarkResult(off, on);
        output.WriteLine();
        output.WriteLine(string.Format(c, "balance with overlap off: compute busy {0:F0} ms, disk busy {1:F0} ms, disk / compute {2:F2} ({3}); perfect overlap: at most {4:F2}x",
            off.ComputeBusy.TotalMilliseconds, off.DiskBusy.TotalMilliseconds, result.DiskOverCompute, BalanceAdvice(result.DiskOverCompute), result.OverlapBound));
        // Each tier's time growing with overlap on shows the two sharing something (cores, memory bandwidth, the disk).
        output.WriteLine(string.Format(c, "with overlap on: compute busy {0:F0} ms ({1:+0;-0}%), disk busy {2:F0} ms ({3:+0;-0}%)",
            on.ComputeBusy.TotalMilliseconds, Percent(on.ComputeBusy, off.ComputeBusy), on.DiskBusy.TotalMilliseconds, Percent(on.DiskBusy, off.DiskBusy)));
        output.WriteLine(string.Format(c, "speedup overlap on / off: {0:F2}x (target >= 1.5), schedule efficiency with overlap {1:F3} (target <= 1.15): {2}",
            result.Speedup, on.Summary.ScheduleEfficiency, result.MeetsTargets ? "targets met" : "targets NOT met"));
        return result;
    }

    /// <summary>What the balance says: within 20% of 1 overlap can come near 2x; otherwise which way the batch moves it.</summary>
    public static string BalanceAdvice(double diskOverCompute) => diskOverCompute switch
    {
        > 1.2 => "disk-bound: a larger --gpu-batch-size adds compute to hide the reads behind",
        < 1 / 1.2 => "compute-bound: a smaller --gpu-batch-size balances it",
        _ => "balanced",
    };

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

    private static int TokensOf(PipelineBenchmarkOptions options) => options.GpuBatchSize * options.NumGpuBatches * options.GenLen;

    /// <summary>A system of one mode, warmed up: the weights loaded and every code path run once.</summary>
    private static async Task<FlexGenSystem> StartAsync(PipelineBenchmarkOptions options, bool overlap, CancellationToken cancellationToken)
    {
        OffloadFolders.CreatePrivate(options.OffloadDirectory);
        var flexgen = FlexGenSystem.Start(SettingsOf(options, overlap), overlap ? "bench-overlap" : "bench-serial",
            Hosting.StandardErrorLogging.Config(options.AkkaLogLevel));
        try
        {
            await flexgen.GenerateAsync(new GenerateRequest { PromptIds = PromptsOf(options), Generation = new(2) }, cancellationToken).ConfigureAwait(false);
            return flexgen;
        }
        catch
        {
            await flexgen.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static Task<GenerationResult> MeasureAsync(FlexGenSystem flexgen, PipelineBenchmarkOptions options, CancellationToken cancellationToken) =>
        flexgen.GenerateAsync(new GenerateRequest { PromptIds = PromptsOf(options), Generation = new(options.GenLen) }, cancellationToken);

    private static ImmutableArray<ImmutableArray<long>> PromptsOf(PipelineBenchmarkOptions options)
    {
        var random = new Random(5);
        return Enumerable.Range(0, options.GpuBatchSize * options.NumGpuBatches)
            .Select(_ => Enumerable.Range(0, options.PromptLen).Select(_ => (long)random.Next(3, options.VocabSize)).ToImmutableArray())
            .ToImmutableArray();
    }

    /// <summary>A mode's requests as one run: timings and tier times summed; its tier table printed, its last trace written.</summary>
    private static PipelineBenchmarkRun Summed(PipelineBenchmarkOptions options, bool overlap, IReadOnlyList<GenerationResult> results, TextWriter output)
    {
        var timings = new PhaseTimings(
            TimeSpan.FromTicks(results.Sum(r => r.Timings.Prefill.Ticks)), TimeSpan.FromTicks(results.Sum(r => r.Timings.Decode.Ticks)));
        var run = new PipelineBenchmarkRun(overlap, TokensOf(options) * results.Count, timings, TraceSummary.Sum(results.Select(r => r.Trace.Summarize())));
        output.WriteLine();
        output.WriteLine(string.Format(CultureInfo.InvariantCulture, "overlap {0}, {1} request(s): {2:F1} tokens/s",
            overlap ? "on" : "off", results.Count, run.TokensPerSecond));
        run.Summary.WriteTo(output);
        if (options.TracePath is { } path)
        {
            var file = overlap ? path : Path.ChangeExtension(path, null) + ".overlap-off.json";
            results[^1].Trace.WriteChromeJson(file);
            output.WriteLine($"trace: {file}");
        }

        return run;
    }
}
