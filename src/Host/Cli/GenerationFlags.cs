namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Actors.Engine;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Tiers;

/// <summary>Flags shared by generate and bench: model, policy, compute dtype, trace.</summary>
public sealed class GenerationFlags
{
    public Option<string?> Model { get; } = new("--model")
    {
        Description = $"Model folder (config.json + FlexGen-layout weights) or preset name ({string.Join(", ", ModelFamilies.PresetNames)}); default: the bundled model.",
    };

    public Option<string?> WeightsPath { get; } = new("--path")
    {
        Description = "For a preset: folder holding <name>-np weights, or _DUMMY_ for dummy weights.",
    };

    public Option<int> GenLen { get; }

    public Option<string?> ComputeDtype { get; } = new("--compute-dtype")
    {
        Description = "float32 | bfloat16 | float16 (default: float16 with CUDA, float32 on the CPU).",
    };

    public Option<string?> Trace { get; }

    public Option<double?> GpuMem { get; } = BudgetOption("--gpu-mem", "GPU memory", "the CUDA device's free memory; without CUDA the GPU tier is CPU memory and counts against --cpu-mem");

    public Option<double?> CpuMem { get; } = BudgetOption("--cpu-mem", "CPU memory", "MemAvailable of /proc/meminfo");

    public Option<double?> DiskMem { get; } = BudgetOption("--disk-mem", "disk", "the free space of the offload folder's file system");

    /// <summary>A tier budget flag in GB (2^30 bytes); absent: the machine's.</summary>
    public static Option<double?> BudgetOption(string name, string what, string detected) => new(name)
    {
        Description = $"Budget of {what} for the run in GB (GiB: 2^30 bytes); a run whose placement needs more is refused up front (default: {detected}).",
        HelpName = "GB",
    };

    /// <summary>Bytes of a budget flag in GB (2^30 bytes); null when absent.</summary>
    public static long? BudgetBytes(ParseResult parse, Option<double?> option) => parse.GetValue(option) is not { } gb ? null
        : TierBudgets.BytesOfGb(gb) ?? throw new UsageException($"{option.Name} {gb}: must be a positive number of GB (2^30 bytes).");

    public Option<int?> ComputeThreads { get; } = ComputeThreadsOption();

    public Option<int?> IoThreads { get; } = IoThreadsOption();

    /// <summary>--io-threads: the disk tier's I/O threads (also bench-pipeline's).</summary>
    public static Option<int?> IoThreadsOption() => new("--io-threads")
    {
        Description = $"The disk tier's I/O threads, 1..{TorchRuntime.MaxThreads} (default: {EngineSettings.DefaultTiers.Disk.IoThreads}).",
        HelpName = "N",
    };

    /// <summary>--compute-threads: libtorch's intra-op threads (also bench-pipeline's).</summary>
    public static Option<int?> ComputeThreadsOption() => new("--compute-threads")
    {
        Description = $"libtorch intra-op threads, 1..{TorchRuntime.MaxThreads} (default: OMP_NUM_THREADS when it holds a valid count, else every core, but one left to the disk tier's reads when the policy puts weights, cache or activations on disk).",
        HelpName = "N",
    };

    public PolicyFlags Policy { get; } = new();

    /// <summary>--policy auto (generate, bench): the cost model chooses the block, placement and CPU attention.</summary>
    public Option<string?> PolicyMode { get; } = AutoOnly(new Option<string?>("--policy")
    {
        Description = "auto: choose --gpu-batch-size, --num-gpu-batches, --percent and --cpu-cache-compute with the cost model for this run " +
                      "within the budgets (--gpu-mem, --cpu-mem, --disk-mem or detected) and the hardware profile (--hardware or this machine's); " +
                      "prints the choice and its prediction, then predicted vs measured.",
        HelpName = "auto",
    });

    private static Option<string?> AutoOnly(Option<string?> option)
    {
        option.AcceptOnlyFromAmong("auto");
        return option;
    }

    /// <summary>--hardware (generate, bench): the hardware profile for bench's bounds and --policy auto.</summary>
    public Option<string?> Hardware { get; } = new("--hardware")
    {
        Description = "Hardware profile JSON (flexgen profile writes one) for bench's bounds and --policy auto; default: this machine's, " +
                      "measured on first use and cached under $FLEXGEN_CACHE_DIR (else $XDG_CACHE_HOME/flexgen, else ~/.cache/flexgen).",
        HelpName = "FILE.json",
    };

    /// <summary>Top-k sampling (generate; added by <see cref="AddSamplingTo"/>).</summary>
    public Option<int?> TopK { get; } = new("--top-k")
    {
        Description = "With --do-sample: draw only from the k most likely tokens (1 is greedy). Default: all.",
    };

    /// <summary>Top-p (nucleus) sampling (generate).</summary>
    public Option<double?> TopP { get; } = new("--top-p")
    {
        Description = "With --do-sample: draw only from the most likely tokens whose probability reaches p, in (0, 1]. Default: 1.",
    };

    /// <summary>Stop strings (generate; repeatable).</summary>
    public Option<string[]> StopStrings { get; } = new("--stop-string")
    {
        Description = "Cut the text at the first occurrence of this text (repeatable; needs the tokenizer); the tokens after the one that completes it are printed as the pad id.",
        Arity = ArgumentArity.OneOrMore,
    };

    /// <summary>Adds --top-k, --top-p and --stop-string.</summary>
    public void AddSamplingTo(Command command)
    {
        command.Options.Add(TopK);
        command.Options.Add(TopP);
        command.Options.Add(StopStrings);
    }

    /// <summary>The sampling options of the flags; a bad value is a usage error naming its flag.</summary>
    public SamplingOptions Sampling(ParseResult parse, bool doSample, double temperature, ulong? seed)
    {
        int? topK = parse.GetValue(TopK);
        double? topP = parse.GetValue(TopP);
        if (topK is < 1) throw new UsageException($"--top-k {topK}: must be >= 1.");
        if (topP is { } p && !(p > 0 && p <= 1)) throw new UsageException($"--top-p {p}: must be in (0, 1].");
        return new SamplingOptions(doSample, temperature, seed, topK, topP);
    }

    /// <summary>The --stop-string texts; an empty one, or any without a tokenizer, is a usage error.</summary>
    public IReadOnlyList<string> GetStopStrings(ParseResult parse, Text.BpeTokenizer? tokenizer)
    {
        var stops = parse.GetValue(StopStrings) ?? [];
        if (stops.Any(string.IsNullOrEmpty)) throw new UsageException("--stop-string: must not be empty.");
        if (stops.Length > 0 && tokenizer is null) throw new UsageException("--stop-string needs the model's tokenizer (the text to search).");
        return stops;
    }

    public GenerationFlags(int defaultGenLen, string? defaultTrace)
    {
        GenLen = new Option<int>("--gen-len")
        {
            Description = "New tokens per sequence.",
            DefaultValueFactory = _ => defaultGenLen,
        };
        Trace = new Option<string?>("--trace")
        {
            Description = "Write the timeline of every tier (Chrome trace-event JSON, opens in Perfetto) to this file.",
            DefaultValueFactory = _ => defaultTrace,
        };
    }

    /// <summary>The model, policy, dtype, budget and thread flags alone (serve: no --gen-len, no --trace).</summary>
    public void AddModelAndPolicyTo(Command command)
    {
        command.Options.Add(Model);
        command.Options.Add(WeightsPath);
        Policy.AddTo(command);
        command.Options.Add(ComputeDtype);
        command.Options.Add(GpuMem);
        command.Options.Add(CpuMem);
        command.Options.Add(DiskMem);
        command.Options.Add(ComputeThreads);
        command.Options.Add(IoThreads);
    }

    /// <summary>Those and --gen-len, --trace, --policy and --hardware (generate, bench).</summary>
    public void AddTo(Command command)
    {
        AddModelAndPolicyTo(command);
        command.Options.Add(GenLen);
        command.Options.Add(Trace);
        command.Options.Add(PolicyMode);
        command.Options.Add(Hardware);
    }

    /// <summary>
    /// Host options from the flags, checked as an embedding's are: a broken rule is a <see cref="FlexGenOptionsException"/>
    /// naming the option key, which <see cref="FlagOf"/> turns back into the flag.
    /// </summary>
    public FlexGenOptions ToOptions(ParseResult parse)
    {
        var options = new FlexGenOptions
        {
            Model = parse.GetValue(Model),
            Path = parse.GetValue(WeightsPath),
            OffloadDir = parse.GetValue(Policy.OffloadDir),
            ComputeDtype = parse.GetValue(ComputeDtype),
            GpuMem = parse.GetValue(GpuMem),
            CpuMem = parse.GetValue(CpuMem),
            DiskMem = parse.GetValue(DiskMem),
            ComputeThreads = parse.GetValue(ComputeThreads),
            IoThreads = parse.GetValue(IoThreads),
            Policy = Policy.ToOptions(parse),
            Hardware = parse.GetResult(Hardware) is null ? null : parse.GetValue(Hardware),
        };
        if (parse.GetResult(PolicyMode) is { Implicit: false })
        {
            // The planner chooses these: a value given beside it would be silently replaced.
            foreach (var chosen in new Option[] { Policy.GpuBatchSize, Policy.NumGpuBatches, Policy.Percent, Policy.CpuCacheCompute })
                if (parse.GetResult(chosen) is { Implicit: false })
                    throw new UsageException($"{chosen.Name}: --policy auto chooses it; give one or the other.");
            options.Policy.Auto = true;
        }
        // The policy and threads are checked here, before the model is read; the other options when the host is set up.
        _ = options.Policy.ToPolicy();
        _ = options.ResolveThreads();
        return options;
    }

    /// <summary>The flag that sets an option (by its <see cref="FlexGenOptionKeys"/> key); a key no flag sets is named as is.</summary>
    public static string FlagOf(string key) => key switch
    {
        FlexGenOptionKeys.Model => "--model",
        FlexGenOptionKeys.Path => "--path",
        FlexGenOptionKeys.OffloadDir => "--offload-dir",
        FlexGenOptionKeys.ClusterListen => "--cluster-listen",
        FlexGenOptionKeys.ClusterSeed => "--seed",
        FlexGenOptionKeys.ClusterStages => "--stages",
        FlexGenOptionKeys.ClusterMaxFrameMb => "--max-frame-mb",
        FlexGenOptionKeys.ComputeDtype => "--compute-dtype",
        FlexGenOptionKeys.GpuMem => "--gpu-mem",
        FlexGenOptionKeys.CpuMem => "--cpu-mem",
        FlexGenOptionKeys.DiskMem => "--disk-mem",
        FlexGenOptionKeys.ComputeThreads => "--compute-threads",
        FlexGenOptionKeys.IoThreads => "--io-threads",
        FlexGenOptionKeys.GpuBatchSize => "--gpu-batch-size",
        FlexGenOptionKeys.NumGpuBatches => "--num-gpu-batches",
        FlexGenOptionKeys.Percent => "--percent",
        FlexGenOptionKeys.AttnSparsity => "--attn-sparsity",
        FlexGenOptionKeys.Hardware => "--hardware",
        _ => key,
    };

    /// <summary>The budget refusal (<see cref="TierCapacityExceededException"/>) behind <paramref name="ex"/>, however wrapped; null if none.</summary>
    public static TierCapacityExceededException? BudgetRefusal(Exception? ex)
    {
        for (; ex is not null; ex = ex is AggregateException { InnerExceptions.Count: 1 } agg ? agg.InnerExceptions[0] : ex.InnerException)
        {
            if (ex is TierCapacityExceededException refused) return refused;
        }
        return null;
    }

    /// <summary>The refusal's one line for the CLI: budgets named by their flags, and which flags set them.</summary>
    public static string DescribeRefusal(TierCapacityExceededException refused)
    {
        string text = refused.Message;
        foreach (string key in new[] { FlexGenOptionKeys.GpuMem, FlexGenOptionKeys.CpuMem, FlexGenOptionKeys.DiskMem })
            text = text.Replace(key, FlagOf(key), StringComparison.Ordinal);
        return text.ReplaceLineEndings(" ") + " --gpu-mem, --cpu-mem and --disk-mem set the budgets (GB of 2^30 bytes).";
    }

    public int GetGenLen(ParseResult parse)
    {
        int genLen = parse.GetValue(GenLen);
        if (genLen < 1) throw new UsageException($"--gen-len {genLen}: must be >= 1.");
        return genLen;
    }

    /// <summary>Text lines FlexGen-style: model, policy, compute dtype and threads (and the auto policy's choice and prediction).</summary>
    public static string Describe(FlexGenRuntime runtime) =>
        (runtime.Setup.AutoPlan is { } auto ? auto.Describe() + "\n" : "") +
        $"model: {runtime.Model.Config.Name} ({(runtime.Model.Location.DummyWeights ? "dummy weights" : runtime.Model.Location.WeightsFolder)})\n" +
        $"policy: gpu-batch-size {runtime.Policy.GpuBatchSize} x num-gpu-batches {runtime.Policy.NumGpuBatches}, " +
        $"percent {string.Join(' ', runtime.Policy.Percent)}, sep-layer {Bool(runtime.Policy.SepLayer)}, overlap {Bool(runtime.Policy.Overlap)}, " +
        $"cpu-cache-compute {Bool(runtime.Policy.CpuCacheCompute)}, attn-sparsity {runtime.Policy.AttnSparsity}, " +
        $"compress-weight {Bool(runtime.Policy.CompressWeight)}, compress-cache {Bool(runtime.Policy.CompressCache)}\n" +
        $"compute: {runtime.ComputeDtype} on {runtime.Device}, {runtime.Setup.ComputeThreads} compute thread(s)" +
        (runtime.Setup.LeavesCoreToDisk ? " (a core left to the disk tier)" : "") + $", {runtime.Setup.IoThreads} disk I/O thread(s)" +
        (MklCpuDispatch.Active ? $", MKL with its Intel code paths ({MklCpuDispatch.LibraryName} preloaded)" : "") +
        (runtime.Setup.ComputeDtype == TorchSharp.torch.ScalarType.BFloat16 && !TorchRuntime.CudaAvailable && TorchRuntime.CpuBFloat16ThroughMkl
            ? ", bfloat16 linears through MKL's cblas_gemm_bf16bf16f32 (no bfloat16 instructions on this CPU)" : "") +
        (HugePageMalloc.Active ? $", malloc on transparent huge pages ({HugePageMalloc.Tunable})" : "") +
        (OpenMpSpin.Active ? $", OpenMP workers spin {OpenMpSpin.SpinCount} before they sleep ({OpenMpSpin.SpinCountVariable})" : "");

    public static string Bool(bool b) => b ? "true" : "false";

    public static string Gb(long bytes) => $"{bytes / (double)(1L << 30):F3} GB";

    public static void PrintPeaks(TextWriter output, RunStatistics stats)
    {
        if (stats.PeakBytesByTier.Count == 0) return;
        output.WriteLine("peak memory: " + string.Join("\t",
            stats.PeakBytesByTier.OrderBy(kv => TierOrder(kv.Key)).Select(kv => $"{kv.Key} {Gb(kv.Value)}")));
    }

    private static int TierOrder(string tier) => tier switch { "gpu" => 0, "cpu" => 1, "disk" => 2, _ => 3 };

    /// <summary>Per-tier busy time, overlap and idle gaps of the run, then where the trace went (when asked for one).</summary>
    public static void PrintTimeline(TextWriter output, IRunTimeline? timeline, string? tracePath)
    {
        if (timeline is not null) output.WriteLine("timeline: " + timeline.Summary.TrimEnd());
        if (WriteTrace(timeline, tracePath) is { } traceLine) output.WriteLine(traceLine);
    }

    /// <summary>Writes the trace when asked; returns the line saying where it went.</summary>
    public static string? WriteTrace(IRunTimeline? timeline, string? path)
    {
        if (string.IsNullOrEmpty(path)) return null;
        if (timeline is null) return "trace: none (the engine recorded no timeline)";
        string full = WriteFile("--trace", path, timeline.WriteChromeJson);
        return $"trace: {full} (open in https://ui.perfetto.dev or chrome://tracing)";
    }

    /// <summary>
    /// Writes a result file named by <paramref name="flag"/> (its folder created). Returns the full path. A failure is an
    /// <see cref="OutputFileException"/> saying which flag and file, what failed and why, e.g.
    /// "--output-ids out/ids.npy: cannot write: out is a file, not a folder".
    /// </summary>
    public static string WriteFile(string flag, string path, Action<string> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        string Failure(string why) => $"{flag} {path}: cannot write: {why}";
        if (Directory.Exists(full)) throw new OutputFileException(Failure($"{full} is a folder"), null);
        string? dir = System.IO.Path.GetDirectoryName(full);
        if (!string.IsNullOrEmpty(dir) && !Directory.Exists(dir))
        {
            // The nearest existing ancestor: a file there is the plain reason the folder cannot be made.
            for (string? up = dir; !string.IsNullOrEmpty(up); up = System.IO.Path.GetDirectoryName(up))
            {
                if (Directory.Exists(up)) break;
                if (File.Exists(up)) throw new OutputFileException(Failure($"{up} is a file, not a folder"), null);
            }
            try
            {
                Directory.CreateDirectory(dir);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new OutputFileException(Failure($"folder {dir} does not exist and cannot be created ({Reason(ex)})"), ex);
            }
        }
        try
        {
            write(full);
            return full;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OutputFileException(Failure(Reason(ex)), ex);
        }
    }

    /// <summary>Why an I/O call failed, without repeating the path (.NET's messages quote it).</summary>
    private static string Reason(Exception ex) => ex switch
    {
        UnauthorizedAccessException => "permission denied",
        FileNotFoundException or DirectoryNotFoundException => "no such file or directory",
        PathTooLongException => "path too long",
        _ => ex.Message.TrimEnd('.'),
    };
}

/// <summary>A result file (--output-ids, --trace, --log-file) could not be written; the message says what and why.</summary>
public sealed class OutputFileException(string message, Exception? inner) : IOException(message, inner);
