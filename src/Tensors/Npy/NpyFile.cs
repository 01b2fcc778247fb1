namespace FlexGen.Tensors.Npy;

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Reads and writes NumPy .npy files (versions 1-3, C order) straight into and out of tensor memory,
/// in chunks, so a multi-gigabyte file never passes through a managed copy of itself.
/// </summary>
public static class NpyFile
{
    /// <summary>Bytes moved per read/write call; also the largest span over tensor memory at a time.</summary>
    public const int ChunkBytes = 8 << 20;

    /// <summary>Reads the header only.</summary>
    public static NpyHeader ReadHeader(string path)
    {
        using var stream = OpenRead(path);
        return NpyHeaderCodec.Read(stream, path);
    }

    /// <summary>Reads the whole array into a new CPU tensor of the file's dtype and shape.</summary>
    public static Tensor Read(string path)
    {
        using var stream = OpenRead(path);
        var header = NpyHeaderCodec.Read(stream, path);
        CheckDataLength(header, stream.Length - header.DataOffset, path);
        return ReadNewTensor(stream, header, path);
    }

    /// <summary>
    /// Reads the array into <paramref name="destination"/>, a contiguous CPU tensor (pinned or not) of the
    /// file's dtype and shape: for tiers that read into preallocated buffers.
    /// </summary>
    public static void ReadInto(string path, Tensor destination)
    {
        using var stream = OpenRead(path);
        var header = NpyHeaderCodec.Read(stream, path);
        CheckDestination(header, destination, path);
        CheckDataLength(header, stream.Length - header.DataOffset, path);
        ReadData(stream, header, destination, path);
    }

    /// <summary>
    /// Writes <paramref name="tensor"/> (any device, any strides: a view writes just its region) as a
    /// version 1.0 (2.0 for huge headers) little-endian C-order .npy file.
    /// </summary>
    public static void Write(string path, Tensor tensor)
    {
        CheckWritable(tensor, path);
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            Share = FileShare.None,
            BufferSize = 0,
        });
        WriteArray(stream, tensor);
    }

    internal static FileStream OpenRead(string path) => new(path, new FileStreamOptions
    {
        Mode = FileMode.Open,
        Access = FileAccess.Read,
        Share = FileShare.Read,
        BufferSize = 0, // reads go straight into tensor memory
        Options = FileOptions.SequentialScan,
    });

    internal static void CheckWritable(Tensor tensor, string path)
    {
        if (!NpyDType.IsSupported(tensor.dtype))
        {
            throw new ArgumentException(
                $"{path}: cannot write dtype {tensor.dtype} as .npy (supported: {string.Join(", ", NpyDType.SupportedCodes)})",
                nameof(tensor));
        }
    }

    internal static void CheckDataLength(NpyHeader header, long available, string fileName)
    {
        if (available < header.DataLength)
        {
            throw new NpyFormatException(fileName,
                $"truncated file: the header announces shape ({string.Join(", ", header.Shape)}) of '{header.Descr}', " +
                $"{header.DataLength} data bytes, but only {Math.Max(0, available)} follow the header");
        }
        if (available > header.DataLength)
        {
            throw new NpyFormatException(fileName,
                $"size mismatch: the header announces shape ({string.Join(", ", header.Shape)}) of '{header.Descr}', " +
                $"{header.DataLength} data bytes, but {available} follow the header");
        }
    }

    internal static Tensor ReadNewTensor(Stream stream, NpyHeader header, string fileName)
    {
        var tensor = empty(header.ShapeArray(), header.DType);
        try
        {
            ReadData(stream, header, tensor, fileName);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Fills a contiguous CPU tensor from the stream, chunk by chunk, swapping bytes for big-endian files.</summary>
    internal static void ReadData(Stream stream, NpyHeader header, Tensor destination, string fileName)
    {
        ForEachChunk(destination, chunk =>
        {
            var read = stream.ReadAtLeast(chunk, chunk.Length, throwOnEndOfStream: false);
            if (read < chunk.Length)
            {
                throw new NpyFormatException(fileName,
                    $"truncated file: the data ends early (the header announces {header.DataLength} data bytes)");
            }
            if (header.BigEndian)
            {
                SwapBytes(chunk, header.ElementSize);
            }
        });
    }

    /// <summary>Writes the preamble and the data of <paramref name="tensor"/> to the stream.</summary>
    internal static void WriteArray(Stream stream, Tensor tensor)
    {
        using var scope = NewDisposeScope();
        // A contiguous CPU tensor is written from its own memory; anything else through one native copy.
        var source = tensor.device_type == DeviceType.CPU ? tensor.contiguous() : tensor.cpu().contiguous();
        stream.Write(NpyHeaderCodec.Encode(source.dtype, source.shape));
        ForEachChunk(source, chunk => stream.Write(chunk));
    }

    static void CheckDestination(NpyHeader header, Tensor destination, string fileName)
    {
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous())
        {
            throw new ArgumentException(
                $"{fileName}: the destination must be a contiguous CPU tensor (it is {destination.device}, " +
                $"contiguous: {destination.is_contiguous()})", nameof(destination));
        }
        if (destination.dtype != header.DType || !destination.shape.SequenceEqual(header.Shape))
        {
            throw new ArgumentException(
                $"{fileName}: the file holds {header.DType} ({string.Join(", ", header.Shape)}) but the destination is " +
                $"{destination.dtype} ({string.Join(", ", destination.shape)})", nameof(destination));
        }
    }

    delegate void ChunkAction(Span<byte> chunk);

    /// <summary>Calls <paramref name="action"/> on consecutive spans over a contiguous CPU tensor's bytes.</summary>
    static void ForEachChunk(Tensor tensor, ChunkAction action)
    {
        var count = tensor.numel();
        if (count == 0)
        {
            return;
        }
        var elementsPerChunk = Math.Max(1, ChunkBytes / tensor.element_size());
        using var flat = tensor.view(-1);
        for (long start = 0; start < count; start += elementsPerChunk)
        {
            using var chunk = flat.narrow(0, start, Math.Min(elementsPerChunk, count - start));
            action(chunk.bytes);
        }
    }

    static void SwapBytes(Span<byte> data, int elementSize)
    {
        switch (elementSize)
        {
            case 2:
                var halves = MemoryMarshal.Cast<byte, ushort>(data);
                BinaryPrimitives.ReverseEndianness(halves, halves);
                break;
            case 4:
                var words = MemoryMarshal.Cast<byte, uint>(data);
                BinaryPrimitives.ReverseEndianness(words, words);
                break;
            case 8:
                var longs = MemoryMarshal.Cast<byte, ulong>(data);
                BinaryPrimitives.ReverseEndianness(longs, longs);
                break;
        }
    }
}
