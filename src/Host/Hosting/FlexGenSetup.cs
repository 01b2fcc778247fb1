namespace FlexGen.Host.Hosting;

using FlexGen.Actors.Benchmark;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Host.Text;
using FlexGen.Tensors;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;

/// <summary>
/// Everything resolved from <see cref="FlexGenOptions"/> before the actor system starts: the model, the
/// validated policy, the compute dtype, the offload folder and the tokenizer.
/// </summary>
public sealed class FlexGenSetup
{
    /// <summary>The name of the offload folder FlexGen makes in the temp folder when none is given: <c>flexgen-offload-&lt;pid&gt;-&lt;guid&gt;</c>.</summary>
    public const string OwnedOffloadPrefix = "flexgen-offload";

    private readonly bool _ownsOffloadDir;

    private FlexGenSetup(FlexGenOptions options, ResolvedModel model, Policy policy, torch.ScalarType computeDtype, (int Compute, int Io) threads,
        string offloadDir, bool ownsOffloadDir, BpeTokenizer? tokenizer, TierBudgets budgets, AutoPlan? autoPlan, ResolvedHardware? hardware,
        Actors.Actors.PipelineSettings pipeline)
    {
        Pipeline = pipeline;
        ComputeThreads = threads.Compute;
        IoThreads = threads.Io;
        AutoPlan = autoPlan;
        _hardware = hardware;
        Budgets = budgets;
        Options = options;
        Model = model;
        Policy = policy;
        ComputeDtype = computeDtype;
        OffloadDir = offloadDir;
        _ownsOffloadDir = ownsOffloadDir;
        Tokenizer = tokenizer;
    }

    public FlexGenOptions Options { get; }

    /// <summary>
    /// The pipeline's settings as the actor system reads them (<see cref="FlexGenOptions.Hocon"/> in front of
    /// hocon/flexgen.conf): the checks before loading count the buffers its prefetch steps keep in flight, as each block's
    /// plan does.
    /// </summary>
    public Actors.Actors.PipelineSettings Pipeline { get; }

    public ResolvedModel Model { get; }

    public Policy Policy { get; }

    public torch.ScalarType ComputeDtype { get; }

    /// <summary>
    /// libtorch's intra-op threads (<see cref="FlexGenOptions.ComputeThreads"/> or the default rule for
    /// <see cref="Policy"/>); every backend of this setup runs with them.
    /// </summary>
    public int ComputeThreads { get; }

    /// <summary>True when the default rule left a core to the disk tier (<see cref="Policy"/> streams from it).</summary>
    public bool LeavesCoreToDisk => ComputeThreads < Options.ResolveThreads(leaveCoreToDisk: false).ComputeThreads;

    /// <summary>The disk tier's I/O threads (<see cref="FlexGenOptions.IoThreads"/> or the tier's default).</summary>
    public int IoThreads { get; }

    /// <summary>"cuda" or "cpu (GPU tier emulated in CPU memory)".</summary>
    public string Device => TorchRuntime.CudaAvailable ? "cuda" : "cpu (GPU tier emulated in CPU memory)";

    public string OffloadDir { get; }

    public BpeTokenizer? Tokenizer { get; }

    /// <summary>
    /// What each tier may hold: <see cref="FlexGenOptions.GpuMem"/>, <see cref="FlexGenOptions.CpuMem"/>,
    /// <see cref="FlexGenOptions.DiskMem"/> where given, else this machine's (detected once, here).
    /// </summary>
    public TierBudgets Budgets { get; }

    /// <exception cref="FlexGenOptionsException">A bad model, policy, dtype or offload folder (names the option key and the rule).</exception>
    /// <param name="say">Hears a line when the hardware profile is measured (<see cref="PolicyOptions.Auto"/> or
    /// <paramref name="measureHardware"/> on first use), and a warning when the CPU computes in a dtype it has no
    /// instructions for (<see cref="ComputeDtypeWarning"/>).</param>
    /// <param name="measureHardware">The caller reads the hardware profile anyway (bench's bounds): measure it now where
    /// none is given or cached, before the threads are chosen by it (without one a disk policy leaves a core to the disk
    /// tier, and a compute-bound run on a new machine was measured on one thread of two).</param>
    /// <exception cref="NoPolicyFitsException"><see cref="PolicyOptions.Auto"/> finds no policy within the budgets.</exception>
    public static FlexGenSetup Create(FlexGenOptions options, ResolvedModel? model = null, Action<string>? say = null, bool measureHardware = false)
    {
        model ??= ModelResolver.Resolve(options.Model, options.Path);
        var policy = options.Policy.ToPolicy();
        var dtype = ParseDtype(options.ComputeDtype);
        _ = options.ResolveThreads(); // a bad count is refused before the model is planned
        if (ComputeDtypeWarning(dtype, TorchRuntime.CudaAvailable, TorchRuntime.CpuMultipliesBFloat16, TorchRuntime.CpuBFloat16ThroughMkl) is { } warning) say?.Invoke(warning);
        bool owns = string.IsNullOrEmpty(options.OffloadDir);
        string offload = owns
            ? Path.Combine(Path.GetTempPath(), OffloadFolders.NewName(OwnedOffloadPrefix))
            : Path.GetFullPath(options.OffloadDir!);
        if (!owns && File.Exists(offload)) throw new FlexGenOptionsException(FlexGenOptionKeys.OffloadDir, options.OffloadDir, "a file is in the way.");
        var budgets = ResolveBudgets(options, offload);
        var pipeline = Actors.Actors.PipelineSettings.FromConfig(string.IsNullOrWhiteSpace(options.Hocon)
            ? Actors.Hosting.FlexGenHocon.Config
            : Akka.Configuration.ConfigurationFactory.ParseString(options.Hocon).WithFallback(Actors.Hosting.FlexGenHocon.Config));
        AutoPlan? auto = null;
        ResolvedHardware? hardware = null;
        if (options.Policy.Auto)
        {
            var (promptLen, genLen, maxBlock) = options.Policy.PlanWorkload();
            hardware = ResolveHardware(options, dtype, offload, say);
            auto = AutoPolicy.Choose(model.Config, policy, promptLen, genLen, budgets, hardware.Profile, hardware.Source,
                EngineSettings.BytesOf(dtype), maxBlock, pipeline.PrefetchSteps);
            policy = auto.Policy;
        }
        if (measureHardware) hardware ??= ResolveHardware(options, dtype, offload, say);
        // Only a disk policy asks the profile (whether to leave a core to the disk tier); a resident run never reads it.
        if (policy.StreamsFromDisk) hardware ??= KnownHardware(options, dtype, offload);
        var threads = options.ResolveThreads(LeaveCoreToDisk(model.Config, policy, options.Policy, budgets, hardware?.Profile, dtype, pipeline.PrefetchSteps));
        return new FlexGenSetup(options, model, policy, dtype, threads, offload, owns, LoadTokenizer(model), budgets, auto, hardware, pipeline);
    }

    /// <summary>
    /// Whether the default compute threads leave a core to the disk tier (<see cref="Tensors.TorchRuntime.DefaultComputeThreadsFor"/>):
    /// when the policy streams from disk, unless this machine's hardware profile, where one is at hand, predicts the decode
    /// slower for it (<see cref="RunPrediction.DecodeGainsFromACoreLeftToTheDisk"/>). On the
    /// 2-core VM, OPT-1.3B with weights on disk: bfloat16 32 x 2 decoded 67-72 token/s on 1 thread against 41-54 on 2,
    /// float32 64 x 4 (compute-bound) 49 against 59.
    /// </summary>
    public static bool LeaveCoreToDisk(Tensors.Models.ModelConfig config, Policy policy, PolicyOptions plan, TierBudgets budgets,
        HardwareProfile? profile, torch.ScalarType computeDtype, int prefetchSteps)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(plan);
        if (!policy.StreamsFromDisk) return false;
        if (profile is null) return true;
        var (promptLen, genLen, _) = plan.PlanWorkload();
        return PolicyCost.Predict(config, policy, promptLen, genLen, profile, budgets.GpuInCpuMemory, EngineSettings.BytesOf(computeDtype), prefetchSteps)
            .DecodeGainsFromACoreLeftToTheDisk(Environment.ProcessorCount, profile.DiskShareWhileComputing);
    }

    // The hardware profile given (--hardware) or cached for this machine, without measuring one: null when neither.
    private static ResolvedHardware? KnownHardware(FlexGenOptions options, torch.ScalarType computeDtype, string offloadDir) =>
        options.Hardware is not null || File.Exists(HardwareProfileCache.Default.PathFor(computeDtype))
            ? ResolveHardware(options, computeDtype, offloadDir)
            : null;

    /// <summary>The policy <see cref="PolicyOptions.Auto"/> chose and its prediction; null when the policy was given.</summary>
    public AutoPlan? AutoPlan { get; }

    private ResolvedHardware? _hardware;

    /// <summary>
    /// The hardware profile of <see cref="FlexGenOptions.Hardware"/>, else this machine's cached one, measured now if
    /// there is none (<paramref name="say"/> hears where it goes); resolved once per setup.
    /// </summary>
    public ResolvedHardware Hardware(Action<string>? say = null) => _hardware ??= ResolveHardware(Options, ComputeDtype, OffloadDir, say);

    /// <exception cref="FlexGenOptionsException">a <see cref="FlexGenOptions.Hardware"/> file (or a cached one) that cannot be read.</exception>
    public static ResolvedHardware ResolveHardware(FlexGenOptions options, torch.ScalarType computeDtype, string offloadDir, Action<string>? say = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            if (options.Hardware is { } file) return new ResolvedHardware(HardwareProfile.Read(file), Path.GetFullPath(file));
            var cache = HardwareProfileCache.Default;
            if (!File.Exists(cache.PathFor(computeDtype)))
                say?.Invoke($"hardware profile: measuring this machine once (about 30 s), cached at {cache.PathFor(computeDtype)}");
            var (profile, path, _) = cache.LoadOrMeasure(computeDtype, new HardwareProfileOptions(offloadDir, ComputeDtype: computeDtype));
            return new ResolvedHardware(profile, path);
        }
        catch (HardwareProfileException ex)
        {
            throw new FlexGenOptionsException(FlexGenOptionKeys.Hardware, ex.Origin, ex.Reason, ex);
        }
    }

    /// <summary>The budgets of <paramref name="options"/> (in GB of 2^30 bytes), the machine's where not given.</summary>
    /// <exception cref="FlexGenOptionsException">A budget that is not a positive number (names its key).</exception>
    public static TierBudgets ResolveBudgets(FlexGenOptions options, string offloadDir)
    {
        ArgumentNullException.ThrowIfNull(options);
        var overrides = new TierCapacities(
            Budget(FlexGenOptionKeys.GpuMem, options.GpuMem),
            Budget(FlexGenOptionKeys.CpuMem, options.CpuMem),
            Budget(FlexGenOptionKeys.DiskMem, options.DiskMem));
        return TierBudgets.Detect(offloadDir, TorchRuntime.CudaAvailable, overrides,
            (FlexGenOptionKeys.GpuMem, FlexGenOptionKeys.CpuMem, FlexGenOptionKeys.DiskMem));
    }

    private static long? Budget(string key, double? gb) => gb is not { } value ? null
        : TierBudgets.BytesOfGb(value) ?? throw new FlexGenOptionsException(key, value.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "must be a positive number of GB (2^30 bytes).");

    /// <summary>
    /// The plan of a run of <paramref name="promptLen"/> + <paramref name="genLen"/> tokens under <see cref="Policy"/>,
    /// checked against <see cref="Budgets"/> before anything is loaded: the check each block's plan repeats.
    /// </summary>
    /// <exception cref="Tensors.Placement.TierCapacityExceededException">a tier's budget is exceeded.</exception>
    public Tensors.Placement.PlacementPlan CheckFits(int promptLen, int genLen) =>
        Tensors.Placement.PlacementPlan.Create(Model.Config, Policy, promptLen, genLen, budgets: Budgets, computeDtypeBytes: Settings.ComputeDtypeBytes,
            computesOnCpu: Budgets.GpuInCpuMemory, prefetchSteps: Pipeline.PrefetchSteps);

    /// <summary>The model folder's tokenizer, when it has the files its family's tokenizer kind reads.</summary>
    public static BpeTokenizer? LoadTokenizer(ResolvedModel model) =>
        model.Location.Folder is { } folder && model.Config.Family.Tokenizer(model.Config) is var spec && BpeTokenizer.IsPresent(folder, spec)
            ? BpeTokenizer.Load(folder, spec)
            : null;

    /// <summary>
    /// The warning for a bfloat16 compute on a CPU without bfloat16 matrix instructions (<paramref name="cpuMultipliesBFloat16"/>
    /// false, <see cref="TorchRuntime.CpuMultipliesBFloat16"/>) whose libtorch has no MKL bfloat16 GEMM to multiply through
    /// (<paramref name="throughMkl"/> false, <see cref="TorchRuntime.CpuBFloat16ThroughMkl"/>): libtorch emulates its
    /// matmuls there, several times slower than float32's; null for any other dtype, with CUDA (the GPU computes), with
    /// MKL, or where the CPU's instructions are not known.
    /// </summary>
    public static string? ComputeDtypeWarning(torch.ScalarType dtype, bool cudaAvailable, bool? cpuMultipliesBFloat16, bool throughMkl) =>
        dtype == torch.ScalarType.BFloat16 && !cudaAvailable && cpuMultipliesBFloat16 == false && !throughMkl
            ? "warning: this CPU has no bfloat16 matrix instructions (no avx512_bf16 or amx_bf16 in /proc/cpuinfo) and this "
              + "libtorch no MKL bfloat16 GEMM: libtorch emulates bfloat16 matmuls, several times slower than float32 (an AVX2 "
              + "EPYC: 18-19 against 72-143 GFLOP/s); --compute-dtype float32 computes faster here"
            : null;

    /// <exception cref="FlexGenOptionsException">Not a dtype name, or float16 without CUDA (key <c>FlexGen:ComputeDtype</c>).</exception>
    public static torch.ScalarType ParseDtype(string? name) => name?.ToLowerInvariant() switch
    {
        null or "" or "auto" => TorchRuntime.CudaAvailable ? torch.ScalarType.Float16 : torch.ScalarType.Float32,
        "float32" or "fp32" => torch.ScalarType.Float32,
        "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
        "float16" or "fp16" => TorchRuntime.CudaAvailable
            ? torch.ScalarType.Float16
            : throw new FlexGenOptionsException(FlexGenOptionKeys.ComputeDtype, name,
                "float16 matmuls on the CPU run at about 1 GFLOP/s; use float32 or bfloat16 without CUDA."),
        _ => throw new FlexGenOptionsException(FlexGenOptionKeys.ComputeDtype, name, "expected float32, bfloat16 or float16."),
    };

    /// <summary>What the pipeline runs: model, weights (or dummy ones), default policy, offload folder, compute dtype and threads.</summary>
    public EngineSettings Settings => new()
    {
        ModelPath = Model.Location.WeightsFolder,
        Model = Model.Config,
        DummyWeights = Model.Location.DummyWeights,
        Policy = Policy,
        OffloadDirectory = OffloadDir,
        Budgets = Budgets,
        Compute = new ComputeSettings(ComputeDtype),
        // CPU attention never runs float16 (1 GFLOP/s on the CPU): bfloat16 when the GPU computes in 16 bits.
        CpuCompute = ComputeDtype == torch.ScalarType.Float32 ? ComputeSettings.Float32 : ComputeSettings.BFloat16,
        ComputeThreads = ComputeThreads,
        Tiers = EngineSettings.DefaultTiers with { Disk = EngineSettings.DefaultTiers.Disk with { IoThreads = IoThreads } },
    };

    /// <summary>Raised when the coordinator starts placing the model's weights in their tiers for a policy.</summary>
    public event Action<Policy>? WeightsLoading;

    /// <summary>Raised after each layer's weights are placed in their tiers, in layer order, on the loading thread.</summary>
    public event Action<WeightLoadProgress>? WeightsLoadProgress;

    /// <summary>Raised after the model's weights are placed in their tiers (how long it took).</summary>
    public event Action<Policy, TimeSpan>? WeightsLoaded;

    /// <summary>Raised when placing the weights failed (before the exception goes on to the coordinator).</summary>
    public event Action<Policy, Exception>? WeightsLoadFailed;

    /// <summary>
    /// The model backend the coordinator drives, built for a policy (weights placed in their tiers). The coordinator
    /// cancels <paramref name="cancellationToken"/> when the request waiting for this load is cancelled.
    /// </summary>
    public IPipelineBackend CreateBackend(Policy policy, CancellationToken cancellationToken) => CreateBackend(Settings, policy, cancellationToken);

    /// <summary>
    /// The backend of one stage of a pipeline over several nodes: the layers <paramref name="load"/> names of the model it
    /// names (resolved here, as on the coordinating node: a folder at the same path, or a preset), under this node's policy,
    /// budgets and offload folder.
    /// </summary>
    public IPipelineBackend CreateStageBackend(LoadStage load, Policy policy, CancellationToken cancellationToken)
    {
        var model = ModelResolver.Resolve(load.Model.Model, load.Model.Path);
        return CreateBackend(Settings with
        {
            ModelPath = model.Location.WeightsFolder,
            Model = model.Config,
            DummyWeights = model.Location.DummyWeights,
            Stage = load.Layers,
        }, policy, cancellationToken);
    }

    private TorchPipelineBackend CreateBackend(EngineSettings settings, Policy policy, CancellationToken cancellationToken)
    {
        OffloadFolders.CreatePrivate(OffloadDir);
        RemoveStaleOffloadFolders();
        WeightsLoading?.Invoke(policy);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        TorchPipelineBackend backend;
        BackendOpened();
        try
        {
            backend = TorchPipelineBackend.Create(settings, policy, new LoadProgress(this), cancellationToken);
        }
        catch (Exception ex)
        {
            // Create has freed what it loaded and deleted its folder.
            BackendReleased();
            WeightsLoadFailed?.Invoke(policy, ex);
            throw;
        }
        backend.Disposed += BackendReleased;
        WeightsLoaded?.Invoke(policy, clock.Elapsed);
        return backend;
    }

    private sealed class LoadProgress(FlexGenSetup setup) : IProgress<WeightLoadProgress>
    {
        public void Report(WeightLoadProgress value) => setup.WeightsLoadProgress?.Invoke(value);
    }

    /// <summary>Deletes the offload folder if FlexGen created it (a user's --offload-dir is left in place).</summary>
    public void DeleteOwnedOffloadDir()
    {
        if (_ownsOffloadDir && Directory.Exists(OffloadDir)) Directory.Delete(OffloadDir, recursive: true);
    }

    private readonly Lock _backendsLock = new();
    private int _liveBackends;
    private TaskCompletionSource _backendsReleased = Released();
    private int _swept;

    /// <summary>
    /// Raised when the first backend of this setup removed the offload folders of dead FlexGen processes (a killed
    /// run's <c>flexgen-&lt;pid&gt;-&lt;guid&gt;</c>) from the offload folder, with what that freed; not raised when there were none.
    /// </summary>
    public event Action<OffloadSweep>? StaleOffloadFoldersRemoved;

    /// <summary>Backends being loaded or loaded and not yet disposed (each holds tiers and offload files).</summary>
    public int LiveBackends
    {
        get { lock (_backendsLock) return _liveBackends; }
    }

    /// <summary>
    /// Completes once no backend of this setup is loading or loaded: every tier freed and every offload file deleted
    /// (a backend whose actor is still running a step is disposed when that step ends).
    /// </summary>
    public Task WhenBackendsReleasedAsync(CancellationToken cancellationToken = default)
    {
        Task released;
        lock (_backendsLock) released = _backendsReleased.Task;
        return released.WaitAsync(cancellationToken);
    }

    /// <summary>
    /// Deletes this process's offload files now, also under a backend that is still running a step (its later file
    /// operations fail; on Linux the bytes are freed once the open files are closed), and the offload folder FlexGen
    /// created. For a process that is about to exit without waiting for that step.
    /// </summary>
    public void DeleteOffloadFilesNow()
    {
        if (!Directory.Exists(OffloadDir)) return;
        string prefix = $"{OffloadFolders.BackendPrefix}-{Environment.ProcessId}-";
        for (int attempt = 0; attempt < 5; attempt++)
        {
            try
            {
                // Only this process's folders (a step may create a file while they go: try again).
                foreach (var folder in Directory.EnumerateDirectories(OffloadDir, prefix + "*").ToList())
                {
                    if (Path.GetFileName(folder).Length != prefix.Length + 32) continue;
                    try
                    {
                        Directory.Delete(folder, recursive: true);
                    }
                    catch (DirectoryNotFoundException)
                    {
                        // Its backend got there first.
                    }
                }
                DeleteOwnedOffloadDir();
                return;
            }
            catch (DirectoryNotFoundException) when (!Directory.Exists(OffloadDir))
            {
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>Once per setup: the offload folders of dead FlexGen processes in the offload folder (and, for the default one, in the temp folder).</summary>
    private void RemoveStaleOffloadFolders()
    {
        if (Interlocked.Exchange(ref _swept, 1) != 0) return;
        var sweeps = new List<OffloadSweep> { OffloadFolders.RemoveStale(OffloadDir) };
        if (_ownsOffloadDir && Path.GetDirectoryName(OffloadDir) is { } temp) sweeps.Add(OffloadFolders.RemoveStale(temp, OwnedOffloadPrefix));
        var sweep = new OffloadSweep(OffloadDir, sweeps.SelectMany(s => s.Removed).ToList(), sweeps.Sum(s => s.FreedBytes));
        if (sweep.Removed.Count > 0) StaleOffloadFoldersRemoved?.Invoke(sweep);
    }

    private void BackendOpened()
    {
        lock (_backendsLock)
        {
            if (_liveBackends++ == 0) _backendsReleased = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    private void BackendReleased()
    {
        lock (_backendsLock)
        {
            if (--_liveBackends == 0) _backendsReleased.TrySetResult();
        }
    }

    private static TaskCompletionSource Released()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        done.SetResult();
        return done;
    }
}

/// <summary>A hardware profile and where it came from (the file given, or this machine's cached one).</summary>
public sealed record ResolvedHardware(HardwareProfile Profile, string Source);
