namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.Globalization;
using FlexGen.Actors.Schedule;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;

/// <summary>
/// <c>flexgen bench</c>: FlexGen's benchmark run (flex_opt.py): one block of gpu_batch_size x num_gpu_batches
/// synthetic prompts of --prompt-len tokens, a warm-up, then the measured run; prints and logs what FlexGen
/// logs (model/cache/hidden sizes, peak memory per tier, prefill/decode/total latency and throughput).
/// --debug-mode as FlexGen's: fewer_batch computes the prefill and a few decoding tokens and projects the decode
/// latency; breakdown does that without overlap and prints the time per task kind and phase.
/// </summary>
public static class BenchCommand
{
    public static Command Build()
    {
        var flags = new GenerationFlags(defaultGenLen: 32, defaultTrace: null);
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens per sequence.", DefaultValueFactory = _ => 512 };
        var cutGenLen = new Option<int?>("--cut-gen-len")
        {
            Description = "Compute only this many tokens and project the decode latency to --gen-len (FlexGen's projection).",
        };
        var logFile = new Option<string>("--log-file")
        {
            Description = "Append the results to this file; 'auto' names it after the run as FlexGen does.",
            DefaultValueFactory = _ => "auto",
        };
        var noLog = new Option<bool>("--no-log") { Description = "Do not write a log file." };
        var warmup = PolicyFlags.Bool("--warmup", true, "Run one short generation first so the measured throughput excludes start-up costs");
        var debugMode = DebugModes.CreateOption();
        var command = new Command("bench", "FlexGen's throughput benchmark (synthetic prompts; --path _DUMMY_ for dummy weights).");
        flags.AddTo(command);
        foreach (var o in new Option[] { promptLen, cutGenLen, logFile, noLog, warmup, debugMode }) command.Options.Add(o);

        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            var options = flags.ToOptions(parse);
            int genLen = flags.GetGenLen(parse);
            int prompt = parse.GetValue(promptLen);
            if (prompt < 1) throw new UsageException($"--prompt-len {prompt}: must be >= 1.");
            int? cut = parse.GetValue(cutGenLen);
            if (cut is { } c && (c < 1 || c > genLen)) throw new UsageException($"--cut-gen-len {c}: must be in [1, --gen-len = {genLen}].");
            var debug = DebugModes.Parse(parse.GetValue(debugMode));
            if (debug == DebugMode.Breakdown) options.Policy.Overlap = false; // FlexGen's generation_loop_debug_normal
            var model = ModelResolver.Resolve(options.Model, options.Path);
            if (!model.Config.Fits(prompt, genLen))
                throw new UsageException($"--prompt-len {prompt} + --gen-len {genLen} - 1 positions exceed {model.Config.Name}'s max sequence length {model.Config.MaxSeqLen}.");

            (options.Policy.PlanPromptLen, options.Policy.PlanGenLen) = (prompt, genLen);
            return await FlexGenCli.RunWithRuntimeAsync(parse, console, options, model, (prompt, genLen), async runtime =>
            {
                var policy = runtime.Policy;
                // Measured (on first use) before the threads were chosen by it.
                var hardware = runtime.Setup.Hardware();
                int numPrompts = policy.GpuBatchSize * policy.NumGpuBatches;
                var config = model.Config;
                long modelBytes = config.ModelBytes();
                long cacheBytes = config.CacheBytes(numPrompts, prompt + genLen);
                long hiddenBytes = config.HiddenBytes(numPrompts, prompt + genLen);
                int numLayers = config.Layers(policy.SepLayer).Count;
                if (debug != DebugMode.None)
                {
                    int debugCut = DebugModes.TokensToRun(cut ?? genLen, numLayers);
                    if (debugCut < (cut ?? genLen)) cut = debugCut;
                }
                console.Output.WriteLine(GenerationFlags.Describe(runtime));

                if (PolicyFlags.GetBool(parse, warmup))
                {
                    console.Error.WriteLine("warmup - generate");
                    var warm = SyntheticPrompts(numPrompts, Math.Min(32, prompt), config.VocabSize, seed: 1);
                    await runtime.Service.GenerateBatchAsync(warm, new GenerationSettings(1), cutGenLen: null, progress: null, cancellation);
                }
                console.Error.WriteLine("benchmark - generate");
                var ids = SyntheticPrompts(numPrompts, prompt, config.VocabSize, seed: 2);
                BatchGeneration result;
                PhaseCpuTime cpuTime;
                using (var progress = new GenerationProgressDisplay(console, "generate", numPrompts, numPrompts, cut ?? genLen))
                {
                    cpuTime = new PhaseCpuTime(progress);
                    result = await runtime.Service.GenerateBatchAsync(ids, new GenerationSettings(genLen), cut, cpuTime, cancellation);
                    cpuTime.Complete();
                    progress.Complete();
                }
                var stats = result.Statistics;

                // FlexGen's numbers: prefill from token 0; decode projected from the computed tokens when cut.
                double prefill = stats.Prefill.TotalSeconds;
                int computed = cut ?? genLen;
                double decode = cut is null || computed <= 1
                    ? stats.Decode.TotalSeconds
                    : stats.Decode.TotalSeconds / (computed - 1) * (genLen - 1);
                double total = prefill + decode;
                double prefillTput = numPrompts * (double)prompt / Math.Max(prefill, 1e-10);
                double decodeTput = numPrompts * (double)(genLen - 1) / Math.Max(decode, 1e-10);
                double totalTput = numPrompts * (double)genLen / Math.Max(total, 1e-10);
                string peaks = string.Join("\t", new[] { "gpu", "cpu", "disk" }
                    .Select(t => $"peak {t} mem: {GenerationFlags.Gb(stats.PeakBytesByTier.GetValueOrDefault(t))}"));
                string log = string.Create(CultureInfo.InvariantCulture,
                    $"model size: {GenerationFlags.Gb(modelBytes)}\tcache size: {GenerationFlags.Gb(cacheBytes)}\thidden size (p): {GenerationFlags.Gb(hiddenBytes)}\n" +
                    $"{peaks}\tprojected: {GenerationFlags.Bool(cut is not null && cut < genLen)}\n" +
                    $"prefill latency: {prefill:F3} s\tprefill throughput: {prefillTput:F3} token/s\n" +
                    $"decode latency: {decode:F3} s\tdecode throughput: {decodeTput:F3} token/s\n" +
                    $"total latency: {total:F3} s\ttotal throughput: {totalTput:F3} token/s");
                console.Output.WriteLine(log);
                var prediction = PolicyCost.Predict(config, policy, prompt, genLen, hardware.Profile, computesOnCpu: runtime.Setup.Budgets.GpuInCpuMemory,
                    runtime.Setup.Settings.ComputeDtypeBytes, runtime.Setup.Pipeline.PrefetchSteps);
                console.Output.Write(DescribeBounds(prediction, hardware.Source, prefillTput, decodeTput, totalTput));
                if (result.Timeline is { } traced)
                {
                    console.Output.Write(DescribeDiskAsRun(prediction, hardware.Profile, runtime.ComputeDtype,
                    [
                        new PhaseActivity("prefill", traced.ActivityDuring(prefill: true), numPrompts * (double)prompt, prefillTput, Steps: 1),
                        new PhaseActivity("decode", traced.ActivityDuring(prefill: false), numPrompts * (double)(computed - 1), decodeTput, Steps: computed - 1),
                    ]));
                }
                console.Output.Write(cpuTime.Describe());
                if (debug == DebugMode.Breakdown && result.Timeline is { } timeline)
                {
                    // FlexGen's breakdown header (flex_opt.py generation_loop_debug_normal), then the time per task kind.
                    console.Output.WriteLine($"#layers: {numLayers}");
                    console.Output.WriteLine($"#batches prefill:  {numLayers * policy.NumGpuBatches}");
                    console.Output.WriteLine($"#batches decoding: {(genLen - 1) * numLayers * policy.NumGpuBatches}");
                    console.Output.WriteLine($"breakdown ({cut ?? genLen} of {genLen} tokens run):");
                    console.Output.Write(timeline.Breakdown);
                }
                if (!parse.GetValue(noLog))
                {
                    string path = parse.GetValue(logFile) is { } f && f != "auto" ? f : AutoLogName(config.Name, policy, prompt, genLen);
                    string written = GenerationFlags.WriteFile("--log-file", path, full => File.AppendAllText(full, log + "\n"));
                    console.Output.WriteLine($"log: {written}");
                }
                GenerationFlags.PrintTimeline(console.Output, result.Timeline, parse.GetValue(flags.Trace));
                return ExitCodes.Success;
            }, cancellation, measureHardware: true);
        });
        return command;
    }

    /// <summary>
    /// The run's bounds from the cost model's terms at its policy and block (the planner's terms): per phase the
    /// throughput the compute alone and each link alone would allow, the prediction, the measured throughput and the
    /// efficiency = measured / the tightest bound.
    /// </summary>
    public static string DescribeBounds(RunPrediction prediction, string hardwareSource, double prefillMeasured, double decodeMeasured, double totalMeasured)
    {
        var text = new System.Text.StringBuilder($"bounds (the cost model at this policy and block; hardware {hardwareSource}):\n");
        foreach (var (phase, measured, predicted) in new[]
                 {
                     ("prefill", prefillMeasured, prediction.Evaluation.PrefillThroughput),
                     ("decode", decodeMeasured, prediction.Evaluation.DecodeThroughput),
                 })
        {
            var bounds = prediction.Bounds.Where(b => b.Phase == phase)
                .Select(b => $"{b.Name} {(double.IsPositiveInfinity(b.TokensPerSecond) ? "-" : b.TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture))}");
            var tightest = prediction.Tightest(phase);
            text.Append(CultureInfo.InvariantCulture,
                $"  {phase + ":",-8} bound {string.Join(", ", bounds)} token/s; predicted {predicted:F1}, measured {measured:F1} token/s; " +
                $"efficiency {measured / tightest.TokensPerSecond:F3} (measured / {tightest.Name} bound)\n");
        }
        double total = prediction.Evaluation.Throughput;
        text.Append(CultureInfo.InvariantCulture, $"  {"total:",-8} predicted {total:F1}, measured {totalMeasured:F1} token/s; measured / predicted {totalMeasured / total:F3}\n");
        return text.ToString();
    }

    /// <summary>One phase of a measured run: what each tier did, the tokens it computed, its measured throughput and its steps
    /// (prefill 1, decode the tokens computed after the first).</summary>
    public sealed record PhaseActivity(string Phase, IReadOnlyList<TierActivity> Tiers, double TokensComputed, double Measured, int Steps);

    /// <summary>
    /// The disk tier as the run got it, per phase where it worked: the bytes it read and wrote over its busy time (its
    /// achieved rate, beside the profile's), and the throughput that busy time allows (the phase's tokens / the disk's busy
    /// seconds); the efficiency against the tighter of that and the other bounds (compute and the other links). The
    /// virtual disk here moved 10x within minutes, so the profile's disk bound is the profile's moment, not the run's;
    /// this line tells a run the disk slowed from one the engine left waiting (then the disk's busy share is low).
    /// Decode's busy time counts token 1's loads, which may run during the prefill: a disk-bound decode may read just
    /// above 1. Where a step read more than the profile's disk span (<see cref="HardwareProfile.DiskSpanBytes"/>), a last
    /// line says so and how to measure a span as long in the run's <paramref name="computeDtype"/>.
    /// </summary>
    public static string DescribeDiskAsRun(RunPrediction prediction, HardwareProfile profile, string computeDtype, IReadOnlyList<PhaseActivity> phases)
    {
        var text = new System.Text.StringBuilder();
        double mostPerStep = 0;
        foreach (var phase in phases)
        {
            if (phase.Tiers.FirstOrDefault(t => t.Tier == PipelineActorKind.DiskIo.ActorName()) is not { Busy.Ticks: > 0 } disk) continue;
            if (text.Length == 0) text.Append("disk tier as the run got it (traced):\n");
            mostPerStep = Math.Max(mostPerStep, disk.LoadedBytes / (double)Math.Max(1, phase.Steps));
            double allowed = phase.TokensComputed / disk.Busy.TotalSeconds;
            // The compute beside the disk's reads at the disk's busy time as run, not the profile's.
            var tightestOther = prediction.Bounds.Where(b => b.Phase == phase.Phase && !b.IsDiskLink)
                .Select(b => b.Name == CostTerms.ComputeBesideDiskReads ? BesideDiskAsRun(prediction, profile, phase, disk.Busy) : b)
                .MinBy(b => b.TokensPerSecond);
            var tighter = tightestOther is { } other && other.TokensPerSecond < allowed
                ? other : new ThroughputBound(phase.Phase, "disk as run", disk.Busy.TotalSeconds, allowed);
            double writeRate = phase.Phase == "prefill" ? profile.CtodBdwCacheP : profile.CtodBdwG;
            text.Append(CultureInfo.InvariantCulture,
                $"  {phase.Phase + ":",-8} read {disk.LoadedBytes / 1e9:F2} GB, wrote {disk.StoredBytes / 1e9:F2} GB in {disk.Busy.TotalSeconds:F2} s busy: " +
                $"{disk.BytesPerSecond / 1e9:F2} GB/s (profile: read {profile.DtocBdw / 1e9:F2}, write {writeRate / 1e9:F2} GB/s); " +
                $"its busy time allows {allowed:F1} token/s; efficiency {phase.Measured / tighter.TokensPerSecond:F3} (measured / {tighter.Name} bound)\n");
        }

        if (profile.DiskSpanBytes is { } span && mostPerStep > span)
        {
            long gib = (long)Math.Ceiling(mostPerStep / (1L << 30));
            text.Append(CultureInfo.InvariantCulture,
                $"  the profile's disk rates hold for {span / (1L << 30):0.#} GiB of distinct transfers; a step of this run read {mostPerStep / 1e9:F1} GB: " +
                $"a VM's host that caches the shorter span reads a longer stream slower; `flexgen profile --compute-dtype {computeDtype} --disk-span-gb {gib}` measures one as long (then `--hardware`)\n");
        }

        return text.ToString();
    }

    /// <summary>
    /// The compute's bound with the disk reading beside it for the time the run's disk was busy: the phase's compute time
    /// alone plus the share of the rate lost over that time (<see cref="HardwareProfile.MatmulLossWhileDiskReads"/>).
    /// </summary>
    private static ThroughputBound BesideDiskAsRun(RunPrediction prediction, HardwareProfile profile, PhaseActivity phase, TimeSpan diskBusy)
    {
        var compute = prediction.Bounds.Single(b => b.Phase == phase.Phase && b.Name == "compute");
        double seconds = phase.TokensComputed / compute.TokensPerSecond + profile.MatmulLossWhileDiskReads * diskBusy.TotalSeconds;
        return new ThroughputBound(phase.Phase, CostTerms.ComputeBesideDiskReads + " as run", seconds, phase.TokensComputed / seconds);
    }

    /// <summary>(n, len) token ids, deterministic, avoiding the special ids 0..3.</summary>
    public static long[,] SyntheticPrompts(int n, int len, int vocabSize, int seed)
    {
        var random = new Random(seed);
        var ids = new long[n, len];
        for (int r = 0; r < n; r++)
            for (int c = 0; c < len; c++)
                ids[r, c] = random.Next(4, vocabSize);
        return ids;
    }

    /// <summary>FlexGen's automatic log name (flex_opt.py get_filename).</summary>
    public static string AutoLogName(string modelName, Tensors.Policies.Policy policy, int promptLen, int genLen)
    {
        string size = modelName.Split('-').Last();
        string name = $"fo-{size}-gbs{policy.GpuBatchSize}-ngbs{policy.NumGpuBatches}-prompt{promptLen}-gen{genLen}-percent-" +
                      string.Join('-', policy.Percent.Select(p => p.ToString(CultureInfo.InvariantCulture)));
        if (policy.CpuCacheCompute) name += "-cpu-cache";
        if (policy.CompressWeight) name += "-compw";
        if (policy.CompressCache) name += "-compc";
        return name + ".log";
    }
}
