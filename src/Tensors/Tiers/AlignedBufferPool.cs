namespace FlexGen.Tensors.Tiers;

using System.Runtime.InteropServices;

/// <summary>
/// The disk tier's aligned bounce buffers (for O_DIRECT pieces that are not block-aligned in memory or length):
/// buffers of at least <see cref="BufferBytes"/>, aligned to <see cref="NativeFile.Alignment"/>; chunk-sized ones are
/// pooled, up to <see cref="Capacity"/>, until the pool is disposed.
/// </summary>
internal sealed unsafe class AlignedBufferPool(long bufferBytes, int capacity) : IDisposable
{
    private readonly object _gate = new();
    private readonly Stack<nint> _buffers = new(); // under _gate
    private bool _disposed; // under _gate

    /// <summary>The size of a pooled buffer (the disk tier's chunk).</summary>
    public long BufferBytes { get; } = bufferBytes;

    /// <summary>The most buffers kept in the pool; any more are freed when returned.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Buffers now in the pool (none may stay once it is disposed).</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _buffers.Count;
            }
        }
    }

    /// <summary>An aligned buffer of at least <paramref name="bytes"/> (pooled when it is chunk-sized).</summary>
    public byte* Rent(long bytes)
    {
        if (bytes <= BufferBytes)
        {
            lock (_gate)
            {
                if (_buffers.TryPop(out var pooled))
                {
                    return (byte*)pooled;
                }
            }
        }

        return (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, BufferBytes), NativeFile.Alignment);
    }

    /// <summary>
    /// Gives a rented buffer back: pooled until the pool is disposed, freed after. The disposed check and the pooling
    /// happen under the lock <see cref="Dispose"/> empties the pool under, so a buffer returned while the pool is being
    /// disposed is either emptied by it or freed here, never left in the pool.
    /// </summary>
    public void Return(byte* buffer, long bytes)
    {
        if (bytes <= BufferBytes)
        {
            lock (_gate)
            {
                if (!_disposed && _buffers.Count < Capacity)
                {
                    _buffers.Push((nint)buffer);
                    return;
                }
            }
        }

        NativeMemory.AlignedFree(buffer);
    }

    /// <summary>Frees every pooled buffer; buffers returned from now on are freed, not pooled.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            // A transfer still running on another thread (a synchronous one) returns its buffer later: it sees the pool
            // disposed under this lock and frees the buffer instead of pooling it.
            _disposed = true;
            while (_buffers.TryPop(out var buffer))
            {
                NativeMemory.AlignedFree((void*)buffer);
            }
        }
    }
}
