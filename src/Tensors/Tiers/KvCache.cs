namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Placement;
using TorchSharp;

/// <summary>
/// The KV cache of a placement plan: one key and one value tensor of shape
/// (prompt_len + gen_len - 1, gpu_batch_size * kv_heads, head_dim) per attention layer j and GPU batch k, each in its
/// home (GPU, CPU, disk, or mixed along dim 1; compressed along dim 2 where the policy says so). Owned here.
/// Offers FlexGen's per-step calls: <see cref="LoadAsync"/> (load_cache) and <see cref="StoreAsync"/> (store_cache).
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
            ? tiers.For(tier)
            : new MixedTier(tiers.Gpu, tiers.Cpu, tiers.Disk, 0, 0, plan.Config.KvHeads);
        if (cache.Compression is { } compression)
        {
            home = new CompressedTier(home, compression);
        }

        var homes = new Dictionary<(int, int), (TieredTensor, TieredTensor)>();
        try
        {
            foreach (var layer in plan.Layers.Where(l => l.Layer.HasKvCache))
            {
                for (var k = 0; k < plan.Policy.NumGpuBatches; k++)
                {
                    var j = layer.Layer.Index;
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

    private static TieredTensor Make(MemoryTier home, long[] shape, CachePlacement cache, string name) => home switch
    {
        MixedTier mixed => mixed.Allocate(shape, torch.ScalarType.Float16, [cache.GpuLength, cache.CpuLength, cache.DiskLength], name),
        _ => home.Allocate(shape, torch.ScalarType.Float16, name),
    };

    /// <summary>The home key and value tensors of attention layer <paramref name="layer"/> (j) and GPU batch <paramref name="batch"/> (k).</summary>
    public (TieredTensor Key, TieredTensor Value) Home(int layer, int batch) =>
        _homes.TryGetValue((layer, batch), out var home)
            ? home
            : throw new ArgumentOutOfRangeException(nameof(layer), $"No KV cache for layer {layer}, GPU batch {batch}: layer {layer} has no attention or the batch is out of range.");

    /// <summary>
    /// Positions [0, <paramref name="length"/>) of the cache of (j, k) as plain float16 tensors on <paramref name="target"/>
    /// (decompressed when stored compressed). A home that already is <paramref name="target"/> is lent as a view.
    /// </summary>
    public Task<LoadedCache> LoadAsync(int layer, int batch, long length, DeviceTier target, CancellationToken cancellationToken = default) =>
        LoadCore(layer, batch, length, target, async: true, cancellationToken);

    /// <summary>Synchronous <see cref="LoadAsync"/> (all I/O on the calling thread).</summary>
    public LoadedCache Load(int layer, int batch, long length, DeviceTier target) =>
        LoadCore(layer, batch, length, target, async: false, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>
    /// Writes new entries (rows, gpu_batch_size * kv_heads, head_dim), on any device, at positions
    /// [<paramref name="position"/>, position + rows) of the cache of (j, k): the prompt at 0 during prefill, one row per
    /// decode step (compressing when the home is compressed).
    /// </summary>
    public Task StoreAsync(int layer, int batch, long position, torch.Tensor key, torch.Tensor value, CancellationToken cancellationToken = default)
    {
        var (keyHome, valueHome) = Home(layer, batch);
        IndexRange[] rows = [new(position, position + key.shape[0])];
        return Task.WhenAll(
            TierCopy.CopyFromAsync(keyHome, rows, key, cancellationToken),
            TierCopy.CopyFromAsync(valueHome, rows, value, cancellationToken));
    }

    /// <summary>Synchronous <see cref="StoreAsync"/>.</summary>
    public void Store(int layer, int batch, long position, torch.Tensor key, torch.Tensor value)
    {
        var (keyHome, valueHome) = Home(layer, batch);
        IndexRange[] rows = [new(position, position + key.shape[0])];
        TierCopy.CopyFrom(keyHome, rows, key);
        TierCopy.CopyFrom(valueHome, rows, value);
    }

    public void Dispose()
    {
        foreach (var (key, value) in _homes.Values)
        {
            key.Dispose();
            value.Dispose();
        }

        _homes.Clear();
    }

    /// <summary>
    /// The one implementation of <see cref="Load"/> and <see cref="LoadAsync"/>: asynchronously key and value load
    /// together; synchronously (complete on return) the key first, and a key that fails stops before the value.
    /// </summary>
    private async Task<LoadedCache> LoadCore(int layer, int batch, long length, DeviceTier target, bool async, CancellationToken cancellationToken)
    {
        var (key, value) = Home(layer, batch);
        IndexRange[] rows = [new(0, length)];
        var loadKey = LoadOne(key, rows, target, async, cancellationToken);
        if (!async)
        {
            await loadKey.ConfigureAwait(false); // already complete: rethrows a failed key load before the value starts
        }

        var loadValue = LoadOne(value, rows, target, async, cancellationToken);
        try
        {
            await Task.WhenAll(loadKey, loadValue).ConfigureAwait(false);
        }
        catch
        {
            // Both have finished (WhenAll waits for all); free whichever succeeded.
            if (loadKey.IsCompletedSuccessfully)
            {
                loadKey.Result.Dispose();
            }

            if (loadValue.IsCompletedSuccessfully)
            {
                loadValue.Result.Dispose();
            }

            throw;
        }

        return new LoadedCache(layer, batch, loadKey.Result, loadValue.Result);
    }

    private static async Task<LoadedTensor> LoadOne(TieredTensor home, IndexRange[] rows, DeviceTier target, bool async, CancellationToken cancellationToken)
    {
        if (home is DeviceTensor resident && resident.Tier == target)
        {
            return LoadedTensor.Lend(resident, rows[0].Length);
        }

        var copy = await TierCopy.CopyToCore(home, target, rows, name: null, async, cancellationToken).ConfigureAwait(false);
        return LoadedTensor.Own((DeviceTensor)copy);
    }
}

/// <summary>A plain tensor on a compute tier, either a copy (freed on dispose) or a view of a home that lives there.</summary>
public sealed class LoadedTensor : IDisposable
{
    private readonly DeviceTensor? _copy;

    private LoadedTensor(torch.Tensor data, DeviceTensor? copy)
    {
        Data = data;
        _copy = copy;
    }

    /// <summary>The tensor (valid until dispose).</summary>
    public torch.Tensor Data { get; }

    /// <summary>True when this is a copy, false when it is a view of its home.</summary>
    public bool IsCopy => _copy is not null;

    internal static LoadedTensor Own(DeviceTensor copy) => new(copy.Data, copy);

    internal static LoadedTensor Lend(DeviceTensor home, long rows) =>
        new(home.Data.narrow(0, 0, rows).DetachFromDisposeScope(), null);

    public void Dispose()
    {
        if (_copy is null)
        {
            Data.Dispose();
        }
        else
        {
            _copy.Dispose();
        }
    }
}

/// <summary>The key and value of one (j, k) cache on a compute tier; disposing frees copies (views of homes just go).</summary>
public sealed class LoadedCache(int layer, int batch, LoadedTensor key, LoadedTensor value) : IDisposable
{
    public int Layer { get; } = layer;

    public int Batch { get; } = batch;

    /// <summary>(length, gpu_batch_size * kv_heads, head_dim).</summary>
    public torch.Tensor Key => key.Data;

    public torch.Tensor Value => value.Data;

    public void Dispose()
    {
        key.Dispose();
        value.Dispose();
    }
}
