namespace FlexGen.Actors.Pipeline;

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
    IReadOnlyList<OptLayerKind> Layers,
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
/// <item>StoreCache: disk-io writes the rows cached on disk, copy those cached on GPU and CPU.</item>
/// <item>LoadHidden / StoreHidden: disk-io when activations live on disk, else copy; token ids in (j = 0) and
/// out (last layer) always go through copy.</item>
/// <item>ComputeLayer: gpu-compute; decode attention with cpu_cache_compute runs the rows whose cache is on
/// CPU or disk on cpu-compute and the rows cached on GPU (if any) on gpu-compute.</item>
/// </list>
/// </summary>
public sealed class TaskRouter
{
    private static readonly TierActorKind[] CopyOnly = { TierActorKind.Copy };
    private static readonly TierActorKind[] DiskOnly = { TierActorKind.DiskIo };
    private static readonly TierActorKind[] GpuOnly = { TierActorKind.GpuCompute };
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

    public IReadOnlyList<TierActorKind> Route(BlockTask task)
    {
        var layer = _plan.Layers[task.Layer];
        switch (task.Kind)
        {
            case TaskKind.LoadWeight:
            {
                var homes = _plan.Weights[task.Layer];
                return Parts(homes.OnDisk, homes.OnCpu);
            }

            case TaskKind.LoadCache:
                return Parts(_plan.CacheDiskRows > 0, _plan.CacheCpuRows > 0 && !_plan.CpuCacheCompute);

            case TaskKind.StoreCache:
                return Parts(_plan.CacheDiskRows > 0, _plan.CacheGpuRows + _plan.CacheCpuRows > 0);

            case TaskKind.LoadHidden when task.Layer == 0:
            case TaskKind.StoreHidden when task.Layer == _plan.Layers.Count - 1:
                return CopyOnly;

            case TaskKind.LoadHidden:
            case TaskKind.StoreHidden:
                return _plan.ActivationHome == TierKind.Disk ? DiskOnly : CopyOnly;

            case TaskKind.ComputeLayer when layer.HasCache() && task.Token > 0 && _plan.CpuAttention:
                return _plan.CacheGpuRows > 0
                    ? new[] { TierActorKind.GpuCompute, TierActorKind.CpuCompute }
                    : new[] { TierActorKind.CpuCompute };

            case TaskKind.ComputeLayer:
                return GpuOnly;

            default:
                throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task kind");
        }
    }

    private static IReadOnlyList<TierActorKind> Parts(bool disk, bool copy) => (disk, copy) switch
    {
        (true, true) => new[] { TierActorKind.DiskIo, TierActorKind.Copy },
        (true, false) => DiskOnly,
        _ => CopyOnly,
    };
}
