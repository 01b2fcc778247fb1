namespace FlexGen.Tensors.Tiers;

/// <summary>
/// float16 values read from disk into the upper halves of float32 tensors, to be widened in place before the tensors
/// are used (<see cref="Complete"/>; <see cref="TierCopy.CopyAs(IReadOnlyList{ValueTuple{DeviceTensor, TieredTensor}})"/>
/// makes them). The engine's compute widens a streamed layer's weights on all its threads right before its matmuls:
/// widened on an I/O thread while the matmuls ran, the two fought over the cores (on 2 cores a plain float32 decode
/// step took 1.49 s alone and 1.89 s beside a thread widening a quarter of the time; an OPT-1.3B float32 step at batch
/// 64 from disk needs 1.2 G values widened). Holds addresses only: the tensors stay their owner's and must outlive it.
/// </summary>
public sealed unsafe class DeferredWidening
{
    private readonly List<(nint Target, long Count)> _tensors = [];
    private readonly Lock _gate = new();

    /// <summary>Nothing to widen.</summary>
    public bool IsEmpty
    {
        get
        {
            lock (_gate)
            {
                return _tensors.Count == 0;
            }
        }
    }

    internal void Add(float* target, long count)
    {
        lock (_gate)
        {
            _tensors.Add(((nint)target, count));
        }
    }

    /// <summary>
    /// Widens every tensor not widened yet, on up to <paramref name="threads"/> threads (default: libtorch's intra-op
    /// threads, whose matmuls follow); a second call, or one from another thread after the first, finds nothing left.
    /// </summary>
    public void Complete(int? threads = null)
    {
        int count = threads ?? TorchRuntime.ComputeThreads;
        lock (_gate)
        {
            foreach (var (target, values) in _tensors)
            {
                HalfConversion.WidenInPlace((float*)target, values, count);
            }

            _tensors.Clear();
        }
    }
}
