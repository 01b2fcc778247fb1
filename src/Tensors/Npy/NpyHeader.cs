namespace FlexGen.Tensors.Npy;

using TorchSharp;

/// <summary>The header of a .npy file: what the data is and where it starts.</summary>
public sealed record NpyHeader
{
    /// <summary>Format version (major): 1, 2 or 3.</summary>
    public required int MajorVersion { get; init; }

    /// <summary>Format version (minor), 0 in every NumPy release so far.</summary>
    public required int MinorVersion { get; init; }

    /// <summary>The descr as written in the file, e.g. <c>&lt;f2</c>.</summary>
    public required string Descr { get; init; }

    /// <summary>The tensor's element type.</summary>
    public required torch.ScalarType DType { get; init; }

    /// <summary>True when the file stores multi-byte items big-endian (they are swapped on read).</summary>
    public required bool BigEndian { get; init; }

    /// <summary>Always false for a header this project returns (Fortran order is rejected).</summary>
    public required bool FortranOrder { get; init; }

    /// <summary>The tensor's shape; empty for a 0-d array.</summary>
    public required IReadOnlyList<long> Shape { get; init; }

    /// <summary>Byte offset of the first data byte from the start of the file.</summary>
    public required long DataOffset { get; init; }

    /// <summary>Bytes per element.</summary>
    public required int ElementSize { get; init; }

    /// <summary>Number of elements (1 for a 0-d array).</summary>
    public long ElementCount => Shape.Aggregate(1L, (count, dim) => count * dim);

    /// <summary>Number of data bytes the header announces.</summary>
    public long DataLength => ElementCount * ElementSize;

    /// <summary>The shape as the array TorchSharp's factory methods take.</summary>
    public long[] ShapeArray() => Shape.ToArray();
}
