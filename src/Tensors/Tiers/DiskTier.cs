namespace FlexGen.Tensors.Tiers;

using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using TorchSharp;

/// <summary>Settings of the disk tier.</summary>
/// <param name="DirectIo">Bypass the page cache with O_DIRECT (aligned bounce buffers; unaligned pieces go buffered).</param>
/// <param name="IoThreads">Threads of the bounded I/O pool that runs awaitable reads and writes.</param>
/// <param name="CapacityBytes">Budget for the bytes of all live disk tensors.</param>
public sealed record DiskTierOptions(bool DirectIo = false, int IoThreads = 4, long CapacityBytes = long.MaxValue)
{
    /// <summary>Size of the aligned buffer one O_DIRECT transfer goes through.</summary>
    public int DirectBufferBytes { get; init; } = 8 << 20;
}

/// <summary>
/// The disk tier (FlexGen's <c>TorchDisk</c>): one raw file per tensor (C-order bytes, no header, length rounded up
/// to 4 KiB) under the offload directory. Reads and writes run on a bounded I/O thread pool when awaited, or on the
/// calling thread when synchronous. Files are deleted when their tensor is disposed and when the tier is disposed.
/// </summary>
public sealed class DiskTier : MemoryTier
{
    private readonly ConcurrentDictionary<string, DiskTensor> _live = new();
    private int _disposed;

    /// <exception cref="OffloadDirectoryException">The directory does not exist, is not a directory, or is not writable.</exception>
    public DiskTier(string offloadDirectory, DiskTierOptions? options = null)
        : base("disk", TierType.Disk, (options ?? new DiskTierOptions()).CapacityBytes)
    {
        Options = options ?? new DiskTierOptions();
        Directory = Path.GetFullPath(offloadDirectory);
        CheckDirectory(Directory);
        DirectIo = Options.DirectIo && NativeFile.DirectIoSupportedOnPlatform;
        IoPool = new IoThreadPool(Options.IoThreads, "disk-io");
    }

    public string Directory { get; }

    public DiskTierOptions Options { get; }

    /// <summary>True when transfers use O_DIRECT (asked for, and on Linux).</summary>
    public bool DirectIo { get; }

    /// <summary>
    /// True once a file system refused O_DIRECT (e.g. an old tmpfs) and transfers fell back to buffered I/O.
    /// </summary>
    public bool DirectIoFellBack { get; internal set; }

    /// <summary>The bounded pool awaitable transfers run on.</summary>
    public IoThreadPool IoPool { get; }

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
            NativeFile.Create(path, NativeFile.AlignUp(bytes));
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
        foreach (var path in _live.Keys)
        {
            TryDelete(path);
        }

        base.Dispose();
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
    internal void ReadRegion(Region region, byte* destination)
    {
        ThrowIfDisposed();
        var runs = region.ByteRuns(TensorShapes.ElementSize(Dtype));
        if (runs.Count == 0)
        {
            return;
        }

        var tier = Tier;
        var direct = tier.DirectIo ? NativeFile.Open(Path, write: false, direct: true) : -1;
        if (tier.DirectIo && direct < 0)
        {
            tier.DirectIoFellBack = true;
        }

        var buffered = direct < 0 ? NativeFile.Open(Path, write: false, direct: false) : -1;
        byte* bounce = null;
        try
        {
            foreach (var (offset, length) in runs)
            {
                if (direct < 0)
                {
                    NativeFile.ReadExactly(buffered, Path, destination, length, offset);
                }
                else if (NativeFile.IsAligned(offset) && NativeFile.IsAligned(length) && NativeFile.IsAligned((long)destination))
                {
                    NativeFile.ReadExactly(direct, Path, destination, length, offset);
                }
                else
                {
                    // Read the aligned superset through an aligned buffer (the file is padded to whole blocks).
                    var bufferBytes = tier.Options.DirectBufferBytes;
                    if (bounce is null)
                    {
                        bounce = (byte*)NativeMemory.AlignedAlloc((nuint)bufferBytes, NativeFile.Alignment);
                    }

                    var position = NativeFile.AlignDown(offset);
                    var end = offset + length;
                    while (position < end)
                    {
                        var chunk = Math.Min(bufferBytes, NativeFile.AlignUp(end) - position);
                        NativeFile.ReadExactly(direct, Path, bounce, chunk, position);
                        var from = Math.Max(offset, position);
                        var to = Math.Min(end, position + chunk);
                        Buffer.MemoryCopy(bounce + (from - position), destination + (from - offset), to - from, to - from);
                        position += chunk;
                    }
                }

                destination += length;
            }
        }
        finally
        {
            if (bounce is not null)
            {
                NativeMemory.AlignedFree(bounce);
            }

            if (direct >= 0)
            {
                NativeFile.Close(direct);
            }

            if (buffered >= 0)
            {
                NativeFile.Close(buffered);
            }
        }
    }

    /// <summary>Writes <paramref name="source"/>, a contiguous buffer of the box's size, into the box <paramref name="region"/>.</summary>
    internal void WriteRegion(Region region, byte* source)
    {
        ThrowIfDisposed();
        var runs = region.ByteRuns(TensorShapes.ElementSize(Dtype));
        if (runs.Count == 0)
        {
            return;
        }

        var tier = Tier;
        var direct = -1;
        var buffered = -1;
        byte* bounce = null;
        try
        {
            foreach (var (offset, length) in runs)
            {
                // O_DIRECT needs whole blocks: a run that ends at the tensor's end may pad its last block (the file is padded).
                var directable = tier.DirectIo && !tier.DirectIoFellBack && NativeFile.IsAligned(offset)
                    && (NativeFile.IsAligned(length) || offset + length == Bytes);
                if (directable && direct < 0)
                {
                    direct = NativeFile.Open(Path, write: true, direct: true);
                    if (direct < 0)
                    {
                        tier.DirectIoFellBack = true;
                        directable = false;
                    }
                }

                if (!directable)
                {
                    if (buffered < 0)
                    {
                        buffered = NativeFile.Open(Path, write: true, direct: false);
                    }

                    NativeFile.WriteExactly(buffered, Path, source, length, offset);
                }
                else if (NativeFile.IsAligned(length) && NativeFile.IsAligned((long)source))
                {
                    NativeFile.WriteExactly(direct, Path, source, length, offset);
                }
                else
                {
                    var bufferBytes = tier.Options.DirectBufferBytes;
                    if (bounce is null)
                    {
                        bounce = (byte*)NativeMemory.AlignedAlloc((nuint)bufferBytes, NativeFile.Alignment);
                    }

                    long done = 0;
                    while (done < length)
                    {
                        var chunk = Math.Min(bufferBytes, length - done);
                        Buffer.MemoryCopy(source + done, bounce, chunk, chunk);
                        var padded = NativeFile.AlignUp(chunk);
                        if (padded != chunk)
                        {
                            new Span<byte>(bounce + chunk, (int)(padded - chunk)).Clear();
                        }

                        NativeFile.WriteExactly(direct, Path, bounce, padded, offset + done);
                        done += chunk;
                    }
                }

                source += length;
            }
        }
        finally
        {
            if (bounce is not null)
            {
                NativeMemory.AlignedFree(bounce);
            }

            if (direct >= 0)
            {
                NativeFile.Close(direct);
            }

            if (buffered >= 0)
            {
                NativeFile.Close(buffered);
            }
        }
    }

    protected override void ReleaseResources() => Tier.Forget(this);
}
