namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Placement;
using TorchSharp;
using DeviceType = TorchSharp.DeviceType;

/// <summary>
/// The KV cache of a placement plan: one key and one value tensor of shape
/// (prompt_len + gen_len - 1, gpu_batch_size * kv_heads, head_dim) per attention layer j and GPU batch k, in the plan's
/// dtype (float16, or the compute dtype, float32 or bfloat16, for CPU attention), each in its home (GPU, CPU, disk, or
/// mixed along dim 1; compressed along dim 2 where the policy says so). A home in the compute dtype in CPU memory of at
/// least <see cref="RowMajorMinPositions"/> positions keeps each row's positions together in memory
/// (<see cref="DeviceTier.AllocateRowMajorCache"/>): the same indices, other strides. Owned here; data moves in and out of each <see cref="Home"/> through <see cref="TierCopy"/>
/// (FlexGen's load_cache / store_cache).
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Dictionary<(int Layer, int Batch), (TieredTensor Key, TieredTensor Value)> _homes;

    private KvCache(PlacementPlan plan, Dictionary<(int, int), (TieredTensor, TieredTensor)> homes)
    {
        Plan = plan;
        _homes = homes;
    }

    public PlacementPlan Plan { get; }

    /// <summary>(positions, gpu_batch_size * kv_heads, head_dim).</summary>
    public IReadOnlyList<long> Shape => Plan.Cache.Shape;

    /// <summary>Allocates every cache tensor in its home; on failure frees what it made.</summary>
    /// <exception cref="TierBudgetExceededException">A tier's budget would be exceeded.</exception>
    public static KvCache Allocate(PlacementPlan plan, MemoryTiers tiers)
    {
        var cache = plan.Cache;
        var shape = cache.Shape.ToArray();
        MemoryTier home = cache.Home is { } tier
            ? tiers[tier]
            : new MixedTier(tiers.Gpu, tiers.Cpu, tiers.Disk, 0, 0, plan.Config.KvHeads);
        if (cache.Compression is { } compression)
        {
            home = new CompressedTier(home, compression);
        }

        var homes = new Dictionary<(int, int), (TieredTensor, TieredTensor)>();
        try
        {
            // j is the position in the plan's layers: a pipeline stage's plan holds a slice of the model's.
            for (var j = 0; j < plan.Layers.Count; j++)
            {
                if (!plan.Layers[j].Layer.HasKvCache)
                {
                    continue;
                }

                for (var k = 0; k < plan.Policy.NumGpuBatches; k++)
                {
                    var key = Make(home, shape, cache, $"cache.j{j}.k{k}.key");
                    try
                    {
                        homes[(j, k)] = (key, Make(home, shape, cache, $"cache.j{j}.k{k}.value"));
                    }
                    catch
                    {
                        key.Dispose();
                        throw;
                    }
                }
            }

            return new KvCache(plan, homes);
        }
        catch
        {
            foreach (var (key, value) in homes.Values)
            {
                key.Dispose();
                value.Dispose();
            }

            throw;
        }
    }

    private static TieredTensor Make(MemoryTier home, long[] shape, CachePlacement cache, string name)
    {
        var dtype = cache.Dtype;
        var tensor = home switch
        {
            MixedTier mixed => mixed.Allocate(shape, dtype, [cache.GpuLength, cache.CpuLength, cache.DiskLength], name,
                rowMajorInCpuMemory: IsRowMajorInMemory(cache, shape)),
            DeviceTier memory => memory.AllocateCache(shape, dtype, name, rowMajorInCpuMemory: IsRowMajorInMemory(cache, shape)),
            _ => home.Allocate(shape, dtype, name),
        };
        try
        {
            Prefault(tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>The fewest positions from which a cache the CPU attends is homed row by row in memory.</summary>
    public const long RowMajorMinPositions = 64;

    /// <summary>
    /// Whether the homes in CPU memory are row-major (<see cref="DeviceTier.AllocateRowMajorCache"/>): a cache in the compute
    /// dtype is one the CPU attends (<see cref="PlacementPlan.KeepsCacheInComputeDtype"/>), and from
    /// <see cref="RowMajorMinPositions"/> on its attention reads each row's positions faster as one run. In FlexGen's order
    /// a row's positions lie rows x head_dim apart, one stream per position, which the CPU's prefetchers follow while there
    /// are few: OPT-125m float32 8 x 4 at prompt 1024 took 13.2 / 11.3 ms per attention layer against 7.8 / 8.0 row by row
    /// (decode 162 / 176 against 241 / 237 token/s), OPT-1.3B bfloat16 16 x 2 at prompt 512 17.0 against 13.4 ms; at 80
    /// positions the two were even, and at 23 (OPT-1.3B bfloat16 64 x 4, prompt 16) FlexGen's order was faster (attention
    /// layer 24.8-28.8 against 28.3-34.4 ms in four alternating pairs).
    /// </summary>
    private static bool IsRowMajorInMemory(CachePlacement cache, long[] shape) => cache.KeptForCpuAttention && shape[0] >= RowMajorMinPositions;

    /// <summary>
    /// Touches every page of the cache's host memory once, here, with all of libtorch's threads. The cache is written a
    /// position at a time, so left untouched each decode step's store page-faults the next position's fresh pages in:
    /// OPT-125m float32 8 x 4 spent 0.2 ms of each 0.25 ms store (17% of the decode) so. The faults now come with the
    /// allocation, as a CUDA cache's allocation costs its time up front. Disk homes need no touch.
    /// </summary>
    private static void Prefault(TieredTensor tensor)
    {
        switch (tensor)
        {
            case DeviceTensor { Data.device_type: DeviceType.CPU } memory:
                memory.Data.zero_();
                break;
            case MixedTensor mixed:
                foreach (var segment in mixed.Segments) Prefault(segment);
                break;
            case CompressedTensor compressed:
                Prefault(compressed.Packed);
                Prefault(compressed.Scales);
                break;
        }
    }

    /// <summary>The home key and value tensors of attention layer <paramref name="layer"/> (j) and GPU batch <paramref name="batch"/> (k).</summary>
    public (TieredTensor Key, TieredTensor Value) Home(int layer, int batch) =>
        _homes.TryGetValue((layer, batch), out var home)
            ? home
            : throw new ArgumentOutOfRangeException(nameof(layer), $"No KV cache for layer {layer}, GPU batch {batch}: layer {layer} has no attention or the batch is out of range.");

    public void Dispose()
    {
        foreach (var (key, value) in _homes.Values)
        {
            key.Dispose();
            value.Dispose();
        }

        _homes.Clear();
    }
}
