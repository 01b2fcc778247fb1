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
    private readonly ConcurrentQueue<DeferredConversion> _conversions = new();

    public TieredTensor?[] Tensors { get; } = new TieredTensor?[count];

    /// <summary>A load part's weights still to convert into their compute-dtype buffers (<see cref="Convert"/>).</summary>
    public void Add(DeferredConversion conversion)
    {
        if (conversion.IsEmpty)
        {
            conversion.Dispose();
            return;
        }

        _conversions.Enqueue(conversion);
    }

    /// <summary>
    /// Converts what the loads left, on the compute's threads right before its matmuls (see <see cref="DeferredConversion"/>),
    /// but for the sources <paramref name="keepsStored"/> picks, which stay in their stored dtype (<see cref="Plain"/>);
    /// the first compute of the layer does it, later ones (other GPU batches, the CPU's attention part) find it done.
    /// </summary>
    public void Convert(Func<DeviceTensor, bool>? keepsStored = null)
    {
        foreach (var conversion in _conversions)
        {
            conversion.Complete(keepsStored);
        }
    }

    /// <summary>
    /// Weight <paramref name="index"/> as the compute reads it: the source kept in its stored dtype where
    /// <see cref="Convert"/> kept one, else the loaded tensor (null where none was loaded).
    /// </summary>
    public TieredTensor? Plain(int index)
    {
        if (Tensors[index] is DeviceTensor target)
        {
            foreach (var conversion in _conversions)
            {
                if (conversion.KeptSource(target) is { } kept) return kept;
            }
        }

        return Tensors[index];
    }

    public void Dispose()
    {
        // Staging buffers of a load whose compute never ran go back first.
        foreach (var conversion in _conversions)
        {
            conversion.Dispose();
        }

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
