namespace FlexGen.Actors.Engine.Buffers;

using System.Collections.Concurrent;
using FlexGen.Tensors.Tiers;

/// <summary>
/// The weights of one layer loaded for one token, by index in the layer's weight list; null where the weight is read in
/// place (homed on the GPU tier) or not loaded by this kind of part. Load parts (disk-io, copy) fill distinct indices,
/// plain weights with buffers rented from <paramref name="pool"/>, which get them back here.
/// </summary>
internal sealed class LoadedWeights(int count, WeightBufferPool pool) : IDisposable
{
    private readonly ConcurrentQueue<DeferredWidening> _widenings = new();

    public TieredTensor?[] Tensors { get; } = new TieredTensor?[count];

    /// <summary>A load part's float16 disk weights still to widen in their float32 buffers (<see cref="Widen"/>).</summary>
    public void Add(DeferredWidening widening)
    {
        if (!widening.IsEmpty) _widenings.Enqueue(widening);
    }

    /// <summary>
    /// Widens what the loads left, on the compute's threads right before its matmuls (see <see cref="DeferredWidening"/>);
    /// the first compute of the layer does it, later ones (other GPU batches, the CPU's attention part) find it done.
    /// </summary>
    public void Widen()
    {
        foreach (var widening in _widenings)
        {
            widening.Complete();
        }
    }

    public void Dispose()
    {
        foreach (var tensor in Tensors)
        {
            pool.Return(tensor);
        }
    }
}

/// <summary>
/// The cache segments of one (i, j, k) loaded for its compute, by segment index: key and value of positions
/// [0, past) (value null when sparse attention fetches its rows while attending). Load parts fill distinct segments.
/// </summary>
internal sealed class LoadedCache : IDisposable
{
    public ConcurrentDictionary<int, (TieredTensor Key, TieredTensor? Value)> Segments { get; } = new();

    public void Dispose() => TierTensors.DisposeAll(Segments.Values.SelectMany(s => new[] { s.Key, s.Value }));
}

/// <summary>The new KV-cache entries a compute made: (s, gpu_batch_size * kv_rows, head_dim) each, s = 1 at decode.</summary>
internal sealed record CacheEntries(DeviceTensor Key, DeviceTensor Value) : IDisposable
{
    public void Dispose()
    {
        Key.Dispose();
        Value.Dispose();
    }
}
