namespace FlexGen.Tensors.Tiers;

using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using TorchSharp;

/// <summary>
/// The disk tier (FlexGen's <c>TorchDisk</c>): one raw file per tensor (C-order bytes, no header, length rounded up
/// to 4 KiB) under the offload directory. A transfer runs on the calling thread; one larger than a chunk is cut into
/// chunks that the caller and up to <see cref="DiskTierSettings.ParallelChunks"/> - 1 of the tier's I/O threads read or
/// write at once. Files are deleted when their tensor is disposed and when the tier is disposed.
/// </summary>
public sealed unsafe class DiskTier : MemoryTier
{
    private readonly ConcurrentDictionary<string, DiskTensor> _live = new();
    private readonly object _bufferGate = new();
    private readonly Stack<nint> _buffers = new(); // pooled aligned buffers, under _bufferGate
    private int _disposed;

    /// <exception cref="OffloadDirectoryException">The directory does not exist, is not a directory, or is not writable.</exception>
    public DiskTier(string offloadDirectory, DiskTierSettings? options = null)
        : base("disk", TierKind.Disk, (options ?? new DiskTierSettings()).CapacityBytes)
    {
        Options = options ?? new DiskTierSettings();
        if (Options.ChunkBytes < NativeFile.Alignment || Options.ChunkBytes % NativeFile.Alignment != 0 || Options.ParallelChunks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"DiskTierSettings.ChunkBytes = {Options.ChunkBytes} must be a positive multiple of {NativeFile.Alignment}, ParallelChunks = {Options.ParallelChunks} at least 1.");
        }

        Directory = Path.GetFullPath(offloadDirectory);
        CheckDirectory(Directory);
        DirectIo = Options.DirectIo && NativeFile.DirectIoSupportedOnPlatform;
        IoPool = new IoThreadPool(Options.IoThreads, "disk-io");
    }

    public string Directory { get; }

    public DiskTierSettings Options { get; }

    /// <summary>True when transfers use O_DIRECT (asked for, and on Linux).</summary>
    public bool DirectIo { get; }

    /// <summary>
    /// True once a file system refused O_DIRECT (e.g. an old tmpfs) and transfers fell back to buffered I/O.
    /// </summary>
    public bool DirectIoFellBack { get; internal set; }

    /// <summary>The threads that run chunks of large transfers next to their callers.</summary>
    internal IoThreadPool IoPool { get; }

    /// <summary>Files of live tensors.</summary>
    public IReadOnlyCollection<string> LiveFiles => _live.Keys.ToArray();

    public override DiskTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        name ??= DefaultName(Name);
        var bytes = TensorShapes.ElementCount(shape) * TensorShapes.ElementSize(dtype);
        Accounting.Reserve(bytes, name);
        var path = Path.Combine(Directory, $"{FileSafe(name)}.{Guid.NewGuid():N}.bin");
        try
        {
            NativeFile.Create(path, NativeFile.AlignUp(bytes), Options.Preallocate);
            var tensor = new DiskTensor(this, shape, dtype, name, path, bytes);
            _live[path] = tensor;
            return tensor;
        }
        catch
        {
            Accounting.Release(bytes);
            TryDelete(path);
            throw;
        }
    }

    /// <summary>Deletes every file still on this tier and stops the I/O pool.</summary>
    public override void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        IoPool.Dispose();
        lock (_bufferGate)
        {
            // A transfer still running on another thread (a synchronous one) returns its buffer later: it sees the tier
            // disposed under this lock and frees the buffer instead of pooling it.
            while (_buffers.TryPop(out var buffer))
            {
                NativeMemory.AlignedFree((void*)buffer);
            }
        }

        foreach (var path in _live.Keys)
        {
            TryDelete(path);
        }

        base.Dispose();
    }

    /// <summary>
    /// Runs <paramref name="chunk"/>(0 .. <paramref name="count"/> - 1), each once: the calling thread and up to
    /// ParallelChunks - 1 helpers queued on the I/O pool take the next chunk until none is left or one has failed.
    /// Returns once every helper that started has finished (helpers still queued then find nothing to do, so a caller
    /// never waits on a busy pool); the first failure is rethrown.
    /// </summary>
    internal void RunChunks(int count, Action<int> chunk)
    {
        var helpers = Math.Min(Options.ParallelChunks, count) - 1;
        if (helpers <= 0)
        {
            for (var i = 0; i < count; i++)
            {
                chunk(i);
            }

            return;
        }

        var gate = new object();
        var next = -1;
        var running = 0;
        var closed = false;
        Exception? failure = null;
        void Drain()
        {
            int i;
            while (Volatile.Read(ref failure) is null && (i = Interlocked.Increment(ref next)) < count)
            {
                try
                {
                    chunk(i);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            }
        }

        void Help()
        {
            lock (gate)
            {
                if (closed)
                {
                    return;
                }

                running++;
            }

            Drain();
            lock (gate)
            {
                running--;
                Monitor.PulseAll(gate);
            }
        }

        for (var h = 0; h < helpers && IoPool.TryQueue(Help); h++)
        {
        }

        Drain();
        lock (gate)
        {
            closed = true;
            while (running > 0)
            {
                Monitor.Wait(gate);
            }
        }

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    /// <summary>An aligned buffer of at least <paramref name="bytes"/> (pooled when it is chunk-sized).</summary>
    internal byte* RentBuffer(long bytes)
    {
        if (bytes <= Options.ChunkBytes)
        {
            lock (_bufferGate)
            {
                if (_buffers.TryPop(out var pooled))
                {
                    return (byte*)pooled;
                }
            }
        }

        return (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, Options.ChunkBytes), NativeFile.Alignment);
    }

    /// <summary>
    /// Gives a rented buffer back: pooled while the tier lives, freed once it is disposed. The disposed check and the
    /// pooling happen under the lock <see cref="Dispose"/> empties the pool under, so a buffer returned while the tier
    /// is being disposed is either emptied by it or freed here, never left in the pool.
    /// </summary>
    internal void ReturnBuffer(byte* buffer, long bytes)
    {
        if (bytes <= Options.ChunkBytes)
        {
            lock (_bufferGate)
            {
                if (Volatile.Read(ref _disposed) == 0 && _buffers.Count < 2 * Options.ParallelChunks * Options.IoThreads)
                {
                    _buffers.Push((nint)buffer);
                    return;
                }
            }
        }

        NativeMemory.AlignedFree(buffer);
    }

    /// <summary>Buffers now in the pool (none may stay once the tier is disposed).</summary>
    internal int PooledBufferCount
    {
        get
        {
            lock (_bufferGate)
            {
                return _buffers.Count;
            }
        }
    }

    internal void Forget(DiskTensor tensor)
    {
        _live.TryRemove(tensor.Path, out _);
        TryDelete(tensor.Path);
        Accounting.Release(tensor.BookedBytes);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: the directory may already be gone.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static string FileSafe(string name)
    {
        var chars = name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_').ToArray();
        return new string(chars, 0, Math.Min(chars.Length, 120));
    }

    private static void CheckDirectory(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            throw new OffloadDirectoryException(directory, File.Exists(directory) ? "is not a directory (it is a file)" : "does not exist");
        }

        var probe = Path.Combine(directory, $".flexgen-probe-{Guid.NewGuid():N}");
        try
        {
            using (File.Create(probe, 1, FileOptions.DeleteOnClose))
            {
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(probe);
            throw new OffloadDirectoryException(directory, $"is not writable ({e.Message})", e);
        }
    }
}

/// <summary>A tensor of the disk tier: a raw file, read and written by byte ranges.</summary>
public sealed unsafe class DiskTensor : TieredTensor
{
    internal DiskTensor(DiskTier tier, ReadOnlySpan<long> shape, torch.ScalarType dtype, string name, string path, long bookedBytes)
        : base(tier, shape, dtype, name)
    {
        Path = path;
        BookedBytes = bookedBytes;
    }

    public new DiskTier Tier => (DiskTier)base.Tier;

    /// <summary>The file that holds the bytes (deleted on dispose).</summary>
    public string Path { get; }

    internal long BookedBytes { get; }

    /// <summary>Reads the box <paramref name="region"/> into <paramref name="destination"/>, a contiguous buffer of the box's size.</summary>
    internal void ReadRegion(Region region, byte* destination) => Transfer(region, destination, write: false);

    /// <summary>Writes <paramref name="source"/>, a contiguous buffer of the box's size, into the box <paramref name="region"/>.</summary>
    internal void WriteRegion(Region region, byte* source) => Transfer(region, source, write: true);

    /// <summary>
    /// Reads the byte runs (file offset, length) one after another into <paramref name="destination"/> (their total size):
    /// positional reads of scattered rows, e.g. the value rows sparse attention picks.
    /// </summary>
    internal void ReadRuns(IReadOnlyList<(long Offset, long Length)> runs, byte* destination)
    {
        ThrowIfDisposed();
        if (runs.Count == 0)
        {
            return;
        }

        using var files = new FilePair(this, write: false);
        foreach (var (offset, length) in runs)
        {
            if (offset < 0 || length < 0 || offset + length > Bytes)
            {
                throw new ArgumentOutOfRangeException(nameof(runs), $"byte run [{offset}, {offset + length}) lies outside '{Name}' ({Bytes} bytes)");
            }

            ReadPiece(files, offset, length, destination);
            destination += length;
        }
    }

    private void Transfer(Region region, byte* memory, bool write)
    {
        ThrowIfDisposed();
        var runs = region.ByteRuns(TensorShapes.ElementSize(Dtype));
        if (runs.Count == 0)
        {
            return;
        }

        using var files = new FilePair(this, write);
        var chunk = (long)Tier.Options.ChunkBytes;
        foreach (var (offset, length) in runs)
        {
            // Chunks are aligned in the file (all but the run's first and last start and end on 4 KiB boundaries).
            var first = NativeFile.AlignDown(offset) / chunk * chunk;
            var count = (int)((offset + length - first + chunk - 1) / chunk);
            var runMemory = (nint)memory;
            void Piece(int i)
            {
                var start = Math.Max(offset, first + (i * chunk));
                var end = Math.Min(offset + length, first + ((i + 1) * chunk));
                if (end > start)
                {
                    var at = (byte*)runMemory + (start - offset);
                    if (write)
                    {
                        WritePiece(files, start, end - start, at);
                    }
                    else
                    {
                        ReadPiece(files, start, end - start, at);
                    }
                }
            }

            Tier.RunChunks(count, Piece);

            memory += length;
        }
    }

    private void ReadPiece(FilePair files, long offset, long length, byte* destination)
    {
        var direct = files.Direct;
        if (direct < 0)
        {
            NativeFile.ReadExactly(files.Buffered, Path, destination, length, offset);
        }
        else if (NativeFile.IsAligned(offset) && NativeFile.IsAligned(length) && NativeFile.IsAligned((long)destination))
        {
            NativeFile.ReadExactly(direct, Path, destination, length, offset);
        }
        else
        {
            // The aligned superset through an aligned buffer (the file is padded to whole blocks).
            var start = NativeFile.AlignDown(offset);
            var span = NativeFile.AlignUp(offset + length) - start;
            var bounce = Tier.RentBuffer(span);
            try
            {
                NativeFile.ReadExactly(direct, Path, bounce, span, start);
                Buffer.MemoryCopy(bounce + (offset - start), destination, length, length);
            }
            finally
            {
                Tier.ReturnBuffer(bounce, span);
            }
        }
    }

    private void WritePiece(FilePair files, long offset, long length, byte* source)
    {
        // O_DIRECT needs whole blocks: a piece that ends at the tensor's end may pad its last block (the file is padded).
        var direct = NativeFile.IsAligned(offset) && (NativeFile.IsAligned(length) || offset + length == Bytes) ? files.Direct : -1;
        if (direct < 0)
        {
            NativeFile.WriteExactly(files.Buffered, Path, source, length, offset);
        }
        else if (NativeFile.IsAligned(length) && NativeFile.IsAligned((long)source))
        {
            NativeFile.WriteExactly(direct, Path, source, length, offset);
        }
        else
        {
            var padded = NativeFile.AlignUp(length);
            var bounce = Tier.RentBuffer(padded);
            try
            {
                Buffer.MemoryCopy(source, bounce, length, length);
                new Span<byte>(bounce + length, (int)(padded - length)).Clear();
                NativeFile.WriteExactly(direct, Path, bounce, padded, offset);
            }
            finally
            {
                Tier.ReturnBuffer(bounce, padded);
            }
        }
    }

    /// <summary>The file opened buffered and (when the tier uses it and the file system allows) with O_DIRECT, lazily.</summary>
    private sealed class FilePair(DiskTensor tensor, bool write) : IDisposable
    {
        private readonly object _gate = new();
        private int _buffered = -1;
        private int _direct = -2; // -2: not tried; -1: unavailable

        public int Buffered
        {
            get
            {
                lock (_gate)
                {
                    if (_buffered < 0)
                    {
                        _buffered = NativeFile.Open(tensor.Path, write, direct: false);
                    }

                    return _buffered;
                }
            }
        }

        /// <summary>The O_DIRECT descriptor, or -1 when the tier does not use O_DIRECT or the file system refuses it.</summary>
        public int Direct
        {
            get
            {
                lock (_gate)
                {
                    if (_direct == -2)
                    {
                        var tier = tensor.Tier;
                        _direct = tier.DirectIo && !tier.DirectIoFellBack ? NativeFile.Open(tensor.Path, write, direct: true) : -1;
                        if (tier.DirectIo && _direct < 0)
                        {
                            tier.DirectIoFellBack = true;
                        }
                    }

                    return _direct;
                }
            }
        }

        public void Dispose()
        {
            if (_buffered >= 0)
            {
                NativeFile.Close(_buffered);
            }

            if (_direct >= 0)
            {
                NativeFile.Close(_direct);
            }
        }
    }

    protected override void ReleaseResources() => Tier.Forget(this);
}
