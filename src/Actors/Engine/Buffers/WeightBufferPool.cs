namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>
/// The GPU-tier buffers streamed weights land in, reused across loads: a load rents one per weight (by shape and dtype),
/// the last consumer's release of the layer returns it; a disk weight stored in another dtype also rents a staging buffer
/// in that dtype, which its compute returns once it has converted it (<see cref="TierCopy.CopyAs(IReadOnlyList{ValueTuple{DeviceTensor, TieredTensor}}, ITensorBufferPool?)"/>). Fresh large tensors page-fault their memory in (on these VMs a
/// fresh 154 MB tensor costs 2.4x a reused one), so after the first token a decode step allocates no weight memory.
/// The pool holds what was in flight at once per shape and dtype (<see cref="FlexGen.Tensors.Placement.MemoryNeed"/>
/// counts it); idle buffers stay booked on the tier until the run is disposed. Thread-safe: loads rent on the I/O
/// actors' threads, compute parts return on theirs.
/// </summary>
internal sealed class WeightBufferPool(DeviceTier tier) : ITensorBufferPool, IDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<(string Shape, ScalarType Dtype), Stack<DeviceTensor>> _idle = new();
    private readonly HashSet<DeviceTensor> _rented = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    /// <summary>Buffers made since the pool was created (a rent that found none idle).</summary>
    public int Allocations { get; private set; }

    /// <summary>An idle buffer of <paramref name="shape"/> and <paramref name="dtype"/> on the tier, or a new one; its contents are stale.</summary>
    public DeviceTensor Rent(IReadOnlyList<long> shape, ScalarType dtype)
    {
        var key = Key(shape, dtype);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_idle.TryGetValue(key, out var idle) || !idle.TryPop(out var buffer))
            {
                buffer = tier.Allocate(shape.ToArray(), dtype, $"streamed-weight[{key.Shape}] {dtype}");
                Allocations++;
            }

            _rented.Add(buffer);
            return buffer;
        }
    }

    /// <summary>Takes back what <see cref="Rent"/> handed out (kept for the next load); frees any other tensor (a compressed load).</summary>
    public void Return(TieredTensor? tensor)
    {
        if (tensor is null)
        {
            return;
        }

        lock (_gate)
        {
            if (tensor is DeviceTensor buffer && _rented.Remove(buffer) && !_disposed)
            {
                var key = Key(buffer.Shape, buffer.Dtype);
                if (!_idle.TryGetValue(key, out var idle))
                {
                    _idle[key] = idle = new Stack<DeviceTensor>();
                }

                idle.Push(buffer);
                return;
            }
        }

        tensor.Dispose();
    }

    private static (string Shape, ScalarType Dtype) Key(IReadOnlyList<long> shape, ScalarType dtype) => (string.Join("x", shape), dtype);

    /// <summary>Frees the idle buffers; a buffer still rented is freed when it is returned.</summary>
    public void Dispose()
    {
        List<DeviceTensor> idle;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            idle = _idle.Values.SelectMany(s => s).ToList();
            _idle.Clear();
        }

        TierTensors.DisposeAll(idle);
    }
}
