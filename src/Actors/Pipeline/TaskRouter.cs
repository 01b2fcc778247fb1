namespace FlexGen.Actors.Pipeline;

using FlexGen.Tensors.Tiers;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;

/// <summary>Which memory tiers hold some of a layer's weights.</summary>
public sealed record LayerWeightHomes(bool OnGpu, bool OnCpu, bool OnDisk)
{
    public static LayerWeightHomes AllOn(TierKind home) => new(home == TierKind.Gpu, home == TierKind.Cpu, home == TierKind.Disk);
}

/// <summary>
/// What the router needs to know of a placement: where each layer's weights are, how many rows of each GPU
/// batch have their KV cache on GPU / CPU / disk (the cache's dim-1 split, in whole sequences), where
/// activations live between layers, and whether decode attention over CPU/disk cache runs on the CPU.
/// </summary>
public sealed record RoutingPlan(
    IReadOnlyList<LayerKind> Layers,
    IReadOnlyList<LayerWeightHomes> Weights,
    int CacheGpuRows,
    int CacheCpuRows,
    int CacheDiskRows,
    TierKind ActivationHome,
    bool CpuCacheCompute)
{
    public int GpuBatchRows => CacheGpuRows + CacheCpuRows + CacheDiskRows;

    /// <summary>True when decode attention of a batch runs (partly) on the CPU compute actor.</summary>
    public bool CpuAttention => CpuCacheCompute && CacheGpuRows < GpuBatchRows;
}

/// <summary>
/// Which tier actors run a part of each task. A task whose data does not move (e.g. weights already on
/// the GPU) still goes to the copy actor as an empty part, so every tier sees the whole block order of its
/// kind of work and the trace shows every step.
/// <list type="bullet">
/// <item>LoadWeight: disk-io for weights on disk, copy for weights on CPU (both when split).</item>
/// <item>LoadCache: disk-io for rows cached on disk; copy for rows cached on CPU unless the CPU computes their
/// attention (then they are read where they are); rows cached on GPU are read in place.</item>
/// <item>StoreCache: disk-io writes the rows cached on disk, copy those cached on CPU and GPU; a cache wholly on GPU is
/// written by gpu-compute.</item>
/// <item>LoadHidden / StoreHidden: disk-io when activations live on disk, else copy; token ids in (j = 0) and
/// out (last layer) always go through copy.</item>
/// <item>ComputeLayer: gpu-compute; decode attention with cpu_cache_compute runs the rows whose cache is on
/// CPU or disk on cpu-compute and the rows cached on GPU (if any) on gpu-compute.</item>
/// </list>
/// </summary>
public sealed class TaskRouter
{
    private static readonly PipelineActorKind[] CopyOnly = { PipelineActorKind.Copy };
    private static readonly PipelineActorKind[] DiskOnly = { PipelineActorKind.DiskIo };
    private static readonly PipelineActorKind[] GpuOnly = { PipelineActorKind.GpuCompute };
    private static readonly PipelineActorKind[] PartOrder = { PipelineActorKind.DiskIo, PipelineActorKind.Copy, PipelineActorKind.GpuCompute, PipelineActorKind.CpuCompute };
    private readonly RoutingPlan _plan;

    public TaskRouter(RoutingPlan plan)
    {
        if (plan.Weights.Count != plan.Layers.Count)
        {
            throw new ArgumentException($"RoutingPlan has weight homes for {plan.Weights.Count} layers but {plan.Layers.Count} layers", nameof(plan));
        }

        _plan = plan;
    }

    public RoutingPlan Plan => _plan;

    public IReadOnlyList<PipelineActorKind> Route(BlockTask task)
    {
        var layer = _plan.Layers[task.Layer];
        switch (task.Kind)
        {
            case TaskKind.LoadWeight:
            {
                var homes = _plan.Weights[task.Layer];
                return Parts(HomesOf(homes.OnGpu, homes.OnCpu, homes.OnDisk).Select(WeightLoader));
            }

            case TaskKind.LoadCache:
                return Parts(CacheHomes().Select(CacheLoader));

            case TaskKind.StoreCache:
                return Parts(CacheHomes().Select(h => (PipelineActorKind?)CacheStorer(h)));

            case TaskKind.LoadHidden when task.Layer == 0:
            case TaskKind.StoreHidden when task.Layer == _plan.Layers.Count - 1:
                return CopyOnly;

            case TaskKind.LoadHidden:
            case TaskKind.StoreHidden:
                return _plan.ActivationHome == TierKind.Disk ? DiskOnly : CopyOnly;

            case TaskKind.ComputeLayer when layer.HasKvCache() && task.Token > 0 && _plan.CpuAttention:
                return Ordered(CacheHomes().Select(CacheAttender));

            case TaskKind.ComputeLayer:
                return GpuOnly;

            default:
                throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task kind");
        }
    }

    // The per-home rules below decide both the routes above and, in the run, which part moves which tensor.

    /// <summary>Who loads a weight homed on <paramref name="home"/> (null: read in place by the compute).</summary>
    public static PipelineActorKind? WeightLoader(TierKind home) => home switch
    {
        TierKind.Disk => PipelineActorKind.DiskIo,
        TierKind.Cpu => PipelineActorKind.Copy,
        _ => null,
    };

    /// <summary>
    /// Who loads KV-cache rows homed on <paramref name="home"/> (null: read in place by the compute; CPU rows stay
    /// where they are when the CPU computes their attention).
    /// </summary>
    public PipelineActorKind? CacheLoader(TierKind home) => home switch
    {
        TierKind.Disk => PipelineActorKind.DiskIo,
        TierKind.Cpu when !_plan.CpuAttention => PipelineActorKind.Copy,
        _ => null,
    };

    /// <summary>Who writes new KV-cache entries to rows homed on <paramref name="home"/>.</summary>
    public PipelineActorKind CacheStorer(TierKind home) => home switch
    {
        TierKind.Disk => PipelineActorKind.DiskIo,
        // A cache wholly on the GPU tier is written by the compute that made the entries (FlexGen stores it on the
        // compute stream): on the copy actor the small writes ran beside the matmuls and stalled their threads (OPT-125m
        // float32 8 x 4 decode 286-316 token/s on copy, 342-361 on gpu-compute, alternating). A split cache keeps one
        // storer for its GPU and CPU rows, so a store is never a compute part beside a copy part.
        TierKind.Gpu when _plan.CacheCpuRows == 0 && _plan.CacheDiskRows == 0 => PipelineActorKind.GpuCompute,
        _ => PipelineActorKind.Copy,
    };

    /// <summary>Which compute actor attends over KV-cache rows homed on <paramref name="home"/> during decode.</summary>
    public PipelineActorKind CacheAttender(TierKind home) =>
        _plan.CpuAttention && home != TierKind.Gpu ? PipelineActorKind.CpuCompute : PipelineActorKind.GpuCompute;

    private IEnumerable<TierKind> CacheHomes() => HomesOf(_plan.CacheGpuRows > 0, _plan.CacheCpuRows > 0, _plan.CacheDiskRows > 0);

    private static IEnumerable<TierKind> HomesOf(bool gpu, bool cpu, bool disk)
    {
        if (gpu)
        {
            yield return TierKind.Gpu;
        }

        if (cpu)
        {
            yield return TierKind.Cpu;
        }

        if (disk)
        {
            yield return TierKind.Disk;
        }
    }

    // A task with no data to move still gets an (empty) copy part, so every tier sees the block order.
    private static IReadOnlyList<PipelineActorKind> Parts(IEnumerable<PipelineActorKind?> owners)
    {
        var parts = Ordered(owners.OfType<PipelineActorKind>());
        return parts.Count == 0 ? CopyOnly : parts;
    }

    // Fixed part order: disk-io before copy, gpu-compute before cpu-compute.
    private static IReadOnlyList<PipelineActorKind> Ordered(IEnumerable<PipelineActorKind> owners)
    {
        var set = owners.ToHashSet();
        return PartOrder.Where(set.Contains).ToArray();
    }

}
