namespace FlexGen.Tensors.Tiers;

using System.Collections.Concurrent;
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
    private readonly AlignedBufferPool _buffers;
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
        _buffers = new AlignedBufferPool(Options.ChunkBytes, 2 * Options.ParallelChunks * Options.IoThreads);
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

    /// <summary>Deletes every file still on this tier, frees the pooled buffers and stops the I/O pool.</summary>
    public override void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // The buffers first: one returned from here on (a transfer still running) is freed, not pooled.
        _buffers.Dispose();
        IoPool.Dispose();

        foreach (var path in _live.Keys)
        {
            TryDelete(path);
        }

        base.Dispose();
    }

    /// <summary>
    /// Runs <paramref name="chunk"/>(0 .. <paramref name="count"/> - 1) on the calling thread and up to
    /// <see cref="DiskTierSettings.ParallelChunks"/> - 1 of the I/O threads (<see cref="IoThreadPool.RunChunks"/>).
    /// </summary>
    internal void RunChunks(int count, Action<int> chunk) => IoPool.RunChunks(count, Options.ParallelChunks, chunk);

    /// <summary>An aligned buffer of at least <paramref name="bytes"/> from the tier's pool (<see cref="AlignedBufferPool.Rent"/>).</summary>
    internal byte* RentBuffer(long bytes) => _buffers.Rent(bytes);

    /// <summary>Gives a rented buffer back: pooled while the tier lives, freed once it is disposed (<see cref="AlignedBufferPool.Return"/>).</summary>
    internal void ReturnBuffer(byte* buffer, long bytes) => _buffers.Return(buffer, bytes);

    /// <summary>Buffers now in the pool (none may stay once the tier is disposed).</summary>
    internal int PooledBufferCount => _buffers.Count;

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
