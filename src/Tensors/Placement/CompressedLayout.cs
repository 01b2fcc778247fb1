using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Placement;

/// <summary>
/// Shapes and bytes of FlexLLMGen's 4-bit compressed layout of a float16 tensor (TorchCompressedDevice.allocate):
/// packed uint8 data with the group dimension rounded up to whole groups and halved, and float16 (scale, min) pairs
/// per group. Lets a tier size or allocate a compressed tensor before any data exists.
/// </summary>
/// <param name="DataShape">uint8 packed data: shape with dim <c>GroupDim</c> = num_groups * group_size / 2.</param>
/// <param name="ScaleShape">float16 scale and min: shape with dim <c>GroupDim</c> replaced by (num_groups, 2).</param>
public sealed record CompressedLayout(IReadOnlyList<long> DataShape, IReadOnlyList<long> ScaleShape)
{
    public long DataBytes => DataShape.Aggregate(1L, (a, d) => a * d); // uint8

    public long ScaleBytes => ScaleShape.Aggregate(1L, (a, d) => a * d) * 2; // float16

    public long Bytes => DataBytes + ScaleBytes;

    /// <summary>The layout of a tensor of <paramref name="shape"/> under <paramref name="config"/>.</summary>
    /// <exception cref="PlacementException">the group dimension is not a dimension of the tensor.</exception>
    public static CompressedLayout Of(IReadOnlyList<long> shape, CompressionConfig config, string what = "tensor",
        string configField = "CompressionConfig")
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(config);
        int dim = config.GroupDim;
        if (dim >= shape.Count)
            throw new PlacementException(
                $"{configField}.GroupDim = {dim} does not exist in {what} of shape ({string.Join(", ", shape)}), " +
                $"rank {shape.Count}.");
        // The shapes GroupQuantizer (the format's one implementation) produces.
        return new CompressedLayout(GroupQuantizer.PackedShape(shape, config), GroupQuantizer.ScaleShape(shape, config));
    }
}
