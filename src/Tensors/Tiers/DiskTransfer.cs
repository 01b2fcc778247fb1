namespace FlexGen.Tensors.Tiers;

/// <summary>
/// The disk tier's read and write path for one <see cref="DiskTensor"/>'s file, on the calling thread: a box is read or
/// written run by run, each run longer than a chunk cut into chunks that <see cref="DiskTier.RunChunks"/> shares with
/// the tier's I/O threads; pieces go through O_DIRECT when the tier uses it (an aligned bounce buffer from the tier's
/// pool for unaligned pieces), buffered otherwise or once the file system refused it.
/// </summary>
internal static unsafe class DiskTransfer
{
    /// <summary>
    /// <see cref="DiskTensor.ReadRegion"/> and <see cref="DiskTensor.WriteRegion"/>: the box <paramref name="region"/> of
    /// <paramref name="tensor"/> from or into <paramref name="memory"/>, a contiguous buffer of the box's size.
    /// </summary>
    public static void Transfer(DiskTensor tensor, Region region, byte* memory, bool write)
    {
        tensor.ThrowIfDisposed();
        var runs = region.ByteRuns(TensorShapes.ElementSize(tensor.Dtype));
        if (runs.Count == 0)
        {
            return;
        }

        using var files = new FilePair(tensor, write);
        var chunk = (long)tensor.Tier.Options.ChunkBytes;
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
                        WritePiece(tensor, files, start, end - start, at);
                    }
                    else
                    {
                        ReadPiece(tensor, files, start, end - start, at);
                    }
                }
            }

            tensor.Tier.RunChunks(count, Piece);

            memory += length;
        }
    }

    /// <summary>
    /// <see cref="DiskTensor.WriteTiled"/>: the whole file of <paramref name="tensor"/> written as <paramref name="pattern"/>
    /// (<paramref name="patternBytes"/>, at most the tensor's bytes) over and over. The pattern is laid out once, as
    /// often as fits a chunk, in an aligned buffer, and that buffer is written at every chunk's place by the tier's I/O
    /// threads: nothing the size of the tensor is made in memory.
    /// </summary>
    public static void WriteTiled(DiskTensor tensor, byte* pattern, long patternBytes)
    {
        tensor.ThrowIfDisposed();
        long total = tensor.Bytes;
        if (patternBytes <= 0 || patternBytes > total)
        {
            throw new ArgumentOutOfRangeException(nameof(patternBytes), $"a tile of {patternBytes} bytes does not fit '{tensor.Name}' ({total} bytes)");
        }

        // Each piece starts at a multiple of the pattern, so the same bytes serve every piece.
        long piece = patternBytes * Math.Max(1, tensor.Tier.Options.ChunkBytes / patternBytes);
        piece = Math.Min(piece, patternBytes * ((total + patternBytes - 1) / patternBytes));
        var buffer = tensor.Tier.RentBuffer(piece);
        try
        {
            for (long at = 0; at < piece; at += patternBytes)
            {
                Buffer.MemoryCopy(pattern, buffer + at, patternBytes, patternBytes);
            }

            using var files = new FilePair(tensor, write: true);
            var count = (int)((total + piece - 1) / piece);
            var source = (nint)buffer;
            tensor.Tier.RunChunks(count, i =>
            {
                long offset = i * piece;
                WritePiece(tensor, files, offset, Math.Min(piece, total - offset), (byte*)source);
            });
        }
        finally
        {
            tensor.Tier.ReturnBuffer(buffer, piece);
        }
    }

    /// <summary>
    /// <see cref="DiskTensor.ReadRuns"/>: each run read whole on the calling thread, checked against the tensor's bytes
    /// before it is read.
    /// </summary>
    public static void ReadRuns(DiskTensor tensor, IReadOnlyList<(long Offset, long Length)> runs, byte* destination)
    {
        tensor.ThrowIfDisposed();
        if (runs.Count == 0)
        {
            return;
        }

        using var files = new FilePair(tensor, write: false);
        foreach (var (offset, length) in runs)
        {
            if (offset < 0 || length < 0 || offset + length > tensor.Bytes)
            {
                throw new ArgumentOutOfRangeException(nameof(runs), $"byte run [{offset}, {offset + length}) lies outside '{tensor.Name}' ({tensor.Bytes} bytes)");
            }

            ReadPiece(tensor, files, offset, length, destination);
            destination += length;
        }
    }

    private static void ReadPiece(DiskTensor tensor, FilePair files, long offset, long length, byte* destination)
    {
        var direct = files.Direct;
        if (direct < 0)
        {
            NativeFile.ReadExactly(files.Buffered, tensor.Path, destination, length, offset);
        }
        else if (NativeFile.IsAligned(offset) && NativeFile.IsAligned(length) && NativeFile.IsAligned((long)destination))
        {
            NativeFile.ReadExactly(direct, tensor.Path, destination, length, offset);
        }
        else
        {
            // The aligned superset through an aligned buffer (the file is padded to whole blocks).
            var start = NativeFile.AlignDown(offset);
            var span = NativeFile.AlignUp(offset + length) - start;
            var bounce = tensor.Tier.RentBuffer(span);
            try
            {
                NativeFile.ReadExactly(direct, tensor.Path, bounce, span, start);
                Buffer.MemoryCopy(bounce + (offset - start), destination, length, length);
            }
            finally
            {
                tensor.Tier.ReturnBuffer(bounce, span);
            }
        }
    }

    private static void WritePiece(DiskTensor tensor, FilePair files, long offset, long length, byte* source)
    {
        // O_DIRECT needs whole blocks: a piece that ends at the tensor's end may pad its last block (the file is padded).
        var direct = NativeFile.IsAligned(offset) && (NativeFile.IsAligned(length) || offset + length == tensor.Bytes) ? files.Direct : -1;
        if (direct < 0)
        {
            NativeFile.WriteExactly(files.Buffered, tensor.Path, source, length, offset);
        }
        else if (NativeFile.IsAligned(length) && NativeFile.IsAligned((long)source))
        {
            NativeFile.WriteExactly(direct, tensor.Path, source, length, offset);
        }
        else
        {
            var padded = NativeFile.AlignUp(length);
            var bounce = tensor.Tier.RentBuffer(padded);
            try
            {
                Buffer.MemoryCopy(source, bounce, length, length);
                new Span<byte>(bounce + length, (int)(padded - length)).Clear();
                NativeFile.WriteExactly(direct, tensor.Path, bounce, padded, offset);
            }
            finally
            {
                tensor.Tier.ReturnBuffer(bounce, padded);
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
}
