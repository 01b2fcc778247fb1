namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// Weights brought into memory in their stored dtype, to be converted into their compute-dtype buffers right before
/// they are used (<see cref="Complete"/>; <see cref="TierCopy.CopyAs(IReadOnlyList{ValueTuple{DeviceTensor, TieredTensor}}, ITensorBufferPool?)"/>
/// makes them). The engine's compute converts a streamed layer's weights right before its matmuls, with libtorch's
/// <c>copy_</c> on the intra-op threads its matmuls use: bit-exact, and on 2 cores it widens float16 into reused memory
/// at 4.8-9.9 G values/s. Hand-written vector code on the thread pool reached 3.2-4.3, and its hand-offs to and from the
/// matmul threads cost more still: OPT-1.3B's 96 block matrices at batch 64 took 1.12-1.22 s a step as resident float32
/// matmuls, 1.37-1.42 s widened first by libtorch, 1.66-2.09 s widened first on the thread pool. Converted on an I/O
/// thread beside the matmuls, the two fought over the cores. Holds the targets (their owner's, who must keep them
/// alive) and the sources: a staging buffer (given back when converted or disposed) or a home in memory (its owner's).
/// </summary>
public sealed class DeferredConversion : IDisposable
{
    private readonly List<(DeviceTensor Target, DeviceTensor Source, Action<DeviceTensor>? Release)> _pending = [];
    private readonly List<(DeviceTensor Target, DeviceTensor Source, Action<DeviceTensor>? Release)> _kept = [];
    private readonly Lock _gate = new();

    /// <summary>Nothing to convert and no source kept.</summary>
    public bool IsEmpty
    {
        get
        {
            lock (_gate)
            {
                return _pending.Count == 0 && _kept.Count == 0;
            }
        }
    }

    /// <summary><paramref name="target"/> = <paramref name="source"/> in target's dtype at <see cref="Complete"/>; then <paramref name="release"/>(source), if given.</summary>
    internal void Add(DeviceTensor target, DeviceTensor source, Action<DeviceTensor>? release)
    {
        lock (_gate)
        {
            _pending.Add((target, source, release));
        }
    }

    /// <summary>
    /// Converts every pair not converted yet, on libtorch's intra-op threads, and gives back their staging buffers; a
    /// second call, or one from another thread after the first, finds nothing left. A source for which
    /// <paramref name="keepsStored"/> holds (a compute that multiplies it as stored) is not converted, now or later: it
    /// stays here, <see cref="KeptSource"/>, until disposed.
    /// </summary>
    public void Complete(Func<DeviceTensor, bool>? keepsStored = null)
    {
        lock (_gate)
        {
            while (_pending.Count > 0)
            {
                var pair = _pending[^1];
                if (keepsStored?.Invoke(pair.Source) == true)
                {
                    _kept.Add(pair);
                    _pending.RemoveAt(_pending.Count - 1);
                    continue;
                }

                // Taken off only once converted: a failed copy leaves the pair for Dispose to give back.
                pair.Target.Data.copy_(pair.Source.Data);
                _pending.RemoveAt(_pending.Count - 1);
                pair.Release?.Invoke(pair.Source);
            }
        }
    }

    /// <summary>The source a <see cref="Complete"/> kept in its stored dtype for <paramref name="target"/>, else null.</summary>
    public DeviceTensor? KeptSource(DeviceTensor target)
    {
        lock (_gate)
        {
            foreach (var (kept, source, _) in _kept)
            {
                if (ReferenceEquals(kept, target)) return source;
            }

            return null;
        }
    }

    /// <summary>Gives back the staging buffers of the pairs not converted (a load whose compute never ran, or kept as stored).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var (_, source, release) in _pending.Concat(_kept))
            {
                release?.Invoke(source);
            }

            _pending.Clear();
            _kept.Clear();
        }
    }
}
