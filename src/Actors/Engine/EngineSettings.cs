namespace FlexGen.Actors.Engine;

using FlexGen.Tensors.Tiers;
using FlexGen.Actors.Actors;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors;
using FlexGen.Tensors.Policies;

/// <summary>
/// What a FlexGen system runs: the model (a FlexGen weight folder, or dummy weights of a given shape), the default
/// policy, where offloaded tensors go and how the layer math computes. Immutable.
/// </summary>
public sealed record EngineSettings
{
    /// <summary>FlexGen's layout: one float16 .npy per parameter, named without extension, plus config.json when
    /// <see cref="Model"/> is null. Ignored with <see cref="DummyWeights"/>.</summary>
    public string? ModelPath { get; init; }

    /// <summary>The model's shape; null: read ModelPath/config.json.</summary>
    public ModelConfig? Model { get; init; }

    /// <summary>Random weights of the model's shape (FlexGen's _DUMMY_ benchmark mode), seeded.</summary>
    public bool DummyWeights { get; init; }

    public int DummySeed { get; init; } = 1;

    public required Policy Policy { get; init; }

    /// <summary>Each backend makes its own subfolder here (its disk tier's folder) and deletes it when disposed.</summary>
    public string OffloadDirectory { get; init; } = Path.Combine(Path.GetTempPath(), "flexgen-offload");

    /// <summary>
    /// The memory tiers' budgets and disk I/O (O_DIRECT by default). The backend sets the disk tier's folder (a subfolder
    /// of <see cref="OffloadDirectory"/>) and pinning (the policy's pin_weight) itself.
    /// </summary>
    public TierSettings Tiers { get; init; } = DefaultTiers;

    /// <summary>The default <see cref="Tiers"/>: unbounded, O_DIRECT disk I/O on the disk tier's default I/O threads.</summary>
    public static TierSettings DefaultTiers { get; } = new() { Disk = new DiskTierSettings(DirectIo: true) };

    /// <summary>
    /// What each tier may hold for a run (homes and working buffers), checked before anything is allocated: at backend
    /// creation for the weights, for each block before its run. Null: this machine's (<see cref="ResolveBudgets"/>).
    /// </summary>
    public TierBudgets? Budgets { get; init; }

    /// <summary>GPU compute: float32 on CPU (exact), bfloat16 (fast), float16 on CUDA.</summary>
    public ComputeSettings Compute { get; init; } = ComputeSettings.Float32;

    /// <summary>CPU attention (cpu_cache_compute): float32 or bfloat16.</summary>
    public ComputeSettings CpuCompute { get; init; } = ComputeSettings.Float32;

    /// <summary>
    /// The layers this node holds and runs as one stage of a pipeline over several nodes; null: the whole model. Only
    /// the stage's weights are checked and loaded, and only its layers get a cache.
    /// </summary>
    public LayerRange? Stage { get; init; }

    /// <summary>
    /// libtorch's intra-op threads, set (process-wide) when a backend is created; the disk tier's I/O threads are
    /// <see cref="DiskTierSettings.IoThreads"/> of <see cref="Tiers"/>. Null: the default rule for the backend's policy,
    /// <see cref="ComputeThreadsFor"/>.
    /// </summary>
    public int? ComputeThreads { get; init; }

    /// <summary>
    /// The intra-op threads of a backend under <paramref name="policy"/>: <see cref="ComputeThreads"/>, else
    /// <see cref="TorchRuntime.DefaultComputeThreadsFor"/> (a core left to the disk tier when the policy streams from it;
    /// the host's setup gives its count, refined by the cost model where a hardware profile is at hand).
    /// </summary>
    public int ComputeThreadsFor(Policy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        return ComputeThreads ?? TorchRuntime.DefaultComputeThreadsFor(policy.StreamsFromDisk);
    }

    /// <summary>Pipeline tuning; null: flexgen.pipeline of the actor system's HOCON.</summary>
    public PipelineSettings? Pipeline { get; init; }

    /// <summary>
    /// <see cref="Budgets"/>, else this machine's: the CUDA device's free memory (the GPU emulated in CPU memory without
    /// CUDA, or with <see cref="TierSettings.ForceEmulatedGpu"/>), MemAvailable, the free space at <see cref="OffloadDirectory"/>.
    /// </summary>
    public TierBudgets ResolveBudgets() =>
        Budgets ?? TierBudgets.Detect(OffloadDirectory, cuda: !GpuComputesOnCpu);

    /// <summary>The GPU tier is CPU memory (no CUDA, or <see cref="TierSettings.ForceEmulatedGpu"/>): its compute runs on the CPU.</summary>
    public bool GpuComputesOnCpu => !TorchRuntime.CudaAvailable || Tiers.ForceEmulatedGpu;

    /// <summary>Bytes of one element of the GPU compute's working buffers.</summary>
    public int ComputeDtypeBytes => BytesOf(Compute.Dtype);

    /// <summary>Bytes of one element of a compute dtype (float32, or a 16-bit one).</summary>
    public static int BytesOf(TorchSharp.torch.ScalarType computeDtype) => computeDtype is TorchSharp.torch.ScalarType.Float32 ? 4 : 2;

    /// <summary>The model config: <see cref="Model"/>, else ModelPath/config.json.</summary>
    public ModelConfig ResolveModel() =>
        Model ?? (ModelPath is { } path
            ? ModelFamilies.FromConfigFile(path)
            : throw new ArgumentException("EngineSettings needs Model or ModelPath", nameof(ModelPath)));
}
