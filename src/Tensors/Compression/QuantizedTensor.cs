namespace FlexGen.Tensors.Compression;

using FlexGen.Tensors.Policies;
using static TorchSharp.torch;

/// <summary>
/// A tensor in FlexLLMGen's 4-bit group-wise format: <see cref="Packed"/> uint8 data (two values a byte,
/// the first in the high nibble) and <see cref="Scale"/> float16 (scale and minimum side by side).
/// Owns both tensors and disposes them.
/// </summary>
public sealed class QuantizedTensor : IDisposable
{
    /// <summary>
    /// Wraps existing packed data and scales (e.g. read from disk or preallocated by a tier) and takes
    /// ownership of them. Their shapes must be <see cref="GroupQuantizer.PackedShape"/> and
    /// <see cref="GroupQuantizer.ScaleShape"/> of <paramref name="originalShape"/>.
    /// </summary>
    public QuantizedTensor(Tensor packed, Tensor scale, IReadOnlyList<long> originalShape, CompressionConfig config)
    {
        GroupQuantizer.Validate(config, originalShape.Count);
        var packedShape = GroupQuantizer.PackedShape(originalShape, config);
        var scaleShape = GroupQuantizer.ScaleShape(originalShape, config);
        if (packed.dtype != ScalarType.Byte || !packed.shape.SequenceEqual(packedShape))
        {
            throw new ArgumentException(
                $"packed data must be Byte ({string.Join(", ", packedShape)}) for original shape " +
                $"({string.Join(", ", originalShape)}) and {config}; it is {packed.dtype} ({string.Join(", ", packed.shape)})",
                nameof(packed));
        }
        if (scale.dtype != ScalarType.Float16 || !scale.shape.SequenceEqual(scaleShape))
        {
            throw new ArgumentException(
                $"scales must be Float16 ({string.Join(", ", scaleShape)}) for original shape " +
                $"({string.Join(", ", originalShape)}) and {config}; it is {scale.dtype} ({string.Join(", ", scale.shape)})",
                nameof(scale));
        }
        Packed = packed;
        Scale = scale;
        OriginalShape = originalShape.ToArray();
        Config = config;
    }

    /// <summary>uint8, the original shape with the group dim replaced by num_groups * group_size / 2.</summary>
    public Tensor Packed { get; }

    /// <summary>float16, the original shape with the group dim replaced by (num_groups, 2): [.., 0, ..] = scale, [.., 1, ..] = min.</summary>
    public Tensor Scale { get; }

    /// <summary>The shape of the tensor before compression (without padding).</summary>
    public IReadOnlyList<long> OriginalShape { get; }

    public CompressionConfig Config { get; }

    /// <summary>Bytes held: packed data plus scales.</summary>
    public long ByteSize => Packed.numel() + Scale.numel() * 2;

    public void Dispose()
    {
        Packed.Dispose();
        Scale.Dispose();
    }
}
