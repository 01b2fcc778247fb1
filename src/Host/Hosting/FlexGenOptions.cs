namespace FlexGen.Host.Hosting;

using FlexGen.Tensors.Policies;

/// <summary>
/// Settings of an embedded FlexGen, bound from configuration (section "FlexGen" by default) or set in code.
/// The policy fields use FlexGen's names and defaults.
/// </summary>
public sealed class FlexGenOptions
{
    public const string SectionName = "FlexGen";

    /// <summary>A model folder (config.json + FlexGen-layout weights) or a preset name; null: the bundled model.</summary>
    public string? Model { get; set; }

    /// <summary>For a preset: the folder holding "&lt;name&gt;-np" weights, or "_DUMMY_" for dummy weights.</summary>
    public string? Path { get; set; }

    /// <summary>Folder for disk-tier tensors; null: a fresh folder under the system temp folder, deleted at shutdown.</summary>
    public string? OffloadDir { get; set; }

    /// <summary>float32 | bfloat16 | float16; null: float16 with CUDA, float32 on the CPU.</summary>
    public string? ComputeDtype { get; set; }

    /// <summary>GPU memory budget in GB (2^30 bytes); null: the CUDA device's free memory (none of its own without CUDA).</summary>
    public double? GpuMem { get; set; }

    /// <summary>CPU memory budget in GB (2^30 bytes); null: MemAvailable of /proc/meminfo (the emulated GPU tier counts against it).</summary>
    public double? CpuMem { get; set; }

    /// <summary>Disk budget in GB (2^30 bytes); null: the free space of the offload folder's file system.</summary>
    public double? DiskMem { get; set; }

    /// <summary>
    /// A hardware profile (the JSON <c>flexgen profile</c> writes) for <see cref="PolicyOptions.Auto"/> and bench's bounds;
    /// null: this machine's, cached under <c>$FLEXGEN_CACHE_DIR</c> (else <c>$XDG_CACHE_HOME/flexgen</c>, else
    /// <c>~/.cache/flexgen</c>) and measured on first use.
    /// </summary>
    public string? Hardware { get; set; }

    /// <summary>
    /// libtorch's intra-op threads (1..1024); null: <c>OMP_NUM_THREADS</c> when it holds a valid count, else every core,
    /// but one left to the disk tier when the policy streams from it (<see cref="Tensors.TorchRuntime.DefaultComputeThreadsFor"/>).
    /// </summary>
    public int? ComputeThreads { get; set; }

    /// <summary>The disk tier's I/O threads (1..1024); null: the engine's default (<see cref="Actors.Engine.EngineSettings.DefaultTiers"/>).</summary>
    public int? IoThreads { get; set; }

    /// <summary>
    /// The validated thread counts: <see cref="ComputeThreads"/>, <see cref="IoThreads"/>, defaults where not given (the
    /// compute's leaving a core to the disk tier when <paramref name="leaveCoreToDisk"/>).
    /// </summary>
    /// <exception cref="FlexGenOptionsException">a count outside 1..1024 (names its key).</exception>
    public (int ComputeThreads, int IoThreads) ResolveThreads(bool leaveCoreToDisk = false) =>
        (ThreadCount(FlexGenOptionKeys.ComputeThreads, ComputeThreads) ?? Tensors.TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk),
         ThreadCount(FlexGenOptionKeys.IoThreads, IoThreads) ?? Actors.Engine.EngineSettings.DefaultTiers.Disk.IoThreads);

    private static int? ThreadCount(string key, int? threads) =>
        threads is { } n && !Tensors.TorchRuntime.IsValidThreadCount(n)
            ? throw new FlexGenOptionsException(key, $"{n}", $"must be a thread count in 1..{Tensors.TorchRuntime.MaxThreads}.")
            : threads;

    /// <summary>How long the service waits for more requests to fill a block after the first (milliseconds).</summary>
    public int BatchWindowMs { get; set; } = 5;

    public PolicyOptions Policy { get; set; } = new();

    /// <summary>
    /// HOCON put in front of hocon/flexgen.conf, e.g. "flexgen.pipeline.prefetch-steps = 2" or dispatcher settings.
    /// </summary>
    public string? Hocon { get; set; }

    /// <summary>Akka log level for the embedded system (e.g. WARNING); null: Akka's default.</summary>
    public string? AkkaLogLevel { get; set; }

    /// <summary>A pipeline over several nodes (Akka.Cluster); null: this node runs the whole model alone.</summary>
    public StageClusterOptions? Cluster { get; set; }
}

/// <summary>
/// This node's part in a pipeline over several nodes: the coordinating node (no <see cref="Seed"/>: it forms the cluster
/// at <see cref="Listen"/> and is the first stage) or a stage worker (joins <see cref="Seed"/>). Each node runs its layers
/// under its own policy and budgets (the options above).
/// </summary>
public sealed class StageClusterOptions
{
    /// <summary>host:port this node listens on (127.0.0.1:0 picks a free port).</summary>
    public string Listen { get; set; } = "127.0.0.1:0";

    /// <summary>host:port of the coordinating node, for a worker; null: this node coordinates (and is the seed).</summary>
    public string? Seed { get; set; }

    /// <summary>Stages in all (the coordinating node's included), for the coordinating node.</summary>
    public int Stages { get; set; } = 2;

    /// <summary>How long the coordinating node waits for the other stages' nodes (seconds).</summary>
    public double StageWaitSeconds { get; set; } = 60;

    /// <summary>The longest prompt a request may bring (the coordinating node sizes its frames for it).</summary>
    public int MaxPromptLen { get; set; } = 512;

    /// <summary>The most tokens a request may generate (the size of a stage's result).</summary>
    public int MaxGenLen { get; set; } = 512;

    /// <summary>A worker's largest accepted message (MiB): the remoting's frame size.</summary>
    public double MaxFrameMb { get; set; } = 64;
}

/// <summary>A bindable form of <see cref="Tensors.Policies.Policy"/> (FlexGen's flags and defaults).</summary>
public sealed class PolicyOptions
{
    public int GpuBatchSize { get; set; } = 4;
    public int NumGpuBatches { get; set; } = 1;

    /// <summary>w_gpu w_cpu cache_gpu cache_cpu act_gpu act_cpu; null: all on the GPU (100 0 100 0 100 0).</summary>
    /// <remarks>Null by default because the configuration binder appends to an existing array.</remarks>
    public double[]? Percent { get; set; }

    public bool Overlap { get; set; } = true;
    public bool SepLayer { get; set; } = true;
    public bool PinWeight { get; set; } = true;
    public bool CpuCacheCompute { get; set; }
    public double AttnSparsity { get; set; } = 1.0;
    public bool CompressWeight { get; set; }
    public bool CompressCache { get; set; }

    /// <summary>
    /// Let the cost model choose the block, the placement and CPU attention (<c>--policy auto</c>) for a workload of
    /// <see cref="PlanPromptLen"/> + <see cref="PlanGenLen"/> tokens within the tier budgets; the other fields here
    /// (overlap, compression, ...) are kept, <see cref="GpuBatchSize"/>, <see cref="NumGpuBatches"/>,
    /// <see cref="Percent"/> and <see cref="CpuCacheCompute"/> are replaced.
    /// </summary>
    public bool Auto { get; set; }

    /// <summary>The prompt tokens per sequence <see cref="Auto"/> plans for.</summary>
    public int PlanPromptLen { get; set; } = 512;

    /// <summary>The new tokens per sequence <see cref="Auto"/> plans for.</summary>
    public int PlanGenLen { get; set; } = 32;

    /// <summary>The most sequences a block <see cref="Auto"/> chooses may hold (e.g. the prompts of a job); null: <see cref="AutoPolicy.DefaultMaxBlockSize"/>.</summary>
    public int? PlanMaxBlockSize { get; set; }

    /// <summary>The validated policy.</summary>
    /// <exception cref="FlexGenOptionsException">A broken policy rule, named by the option key (e.g. <c>FlexGen:Policy:Percent</c>).</exception>
    public Policy ToPolicy()
    {
        try
        {
            return Tensors.Policies.Policy.FromPercent(Percent ?? [.. Tensors.Policies.Policy.AllGpuPercent], GpuBatchSize, NumGpuBatches) with
            {
                Overlap = Overlap,
                SepLayer = SepLayer,
                PinWeight = PinWeight,
                CpuCacheCompute = CpuCacheCompute,
                AttnSparsity = AttnSparsity,
                CompressWeight = CompressWeight,
                CompressCache = CompressCache,
            };
        }
        catch (PolicyValidationException ex)
        {
            throw FlexGenOptionsException.FromPolicy(ex);
        }
    }

    public static PolicyOptions From(Policy policy) => new()
    {
        GpuBatchSize = policy.GpuBatchSize,
        NumGpuBatches = policy.NumGpuBatches,
        Percent = [.. policy.Percent],
        Overlap = policy.Overlap,
        SepLayer = policy.SepLayer,
        PinWeight = policy.PinWeight,
        CpuCacheCompute = policy.CpuCacheCompute,
        AttnSparsity = policy.AttnSparsity,
        CompressWeight = policy.CompressWeight,
        CompressCache = policy.CompressCache,
    };

    /// <summary>The workload <see cref="Auto"/> plans for.</summary>
    /// <exception cref="FlexGenOptionsException">a length or block limit below 1 (names its key).</exception>
    public (int PromptLen, int GenLen, int? MaxBlockSize) PlanWorkload()
    {
        if (PlanPromptLen < 1) throw new FlexGenOptionsException(FlexGenOptionKeys.PlanPromptLen, $"{PlanPromptLen}", "must be >= 1.");
        if (PlanGenLen < 1) throw new FlexGenOptionsException(FlexGenOptionKeys.PlanGenLen, $"{PlanGenLen}", "must be >= 1.");
        if (PlanMaxBlockSize is < 1) throw new FlexGenOptionsException(FlexGenOptionKeys.PlanMaxBlockSize, $"{PlanMaxBlockSize}", "must be >= 1 (or unset: no limit).");
        return (PlanPromptLen, PlanGenLen, PlanMaxBlockSize);
    }
}
