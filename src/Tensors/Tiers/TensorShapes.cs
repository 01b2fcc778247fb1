namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>Shape and element-size arithmetic shared by the tiers.</summary>
public static class TensorShapes
{
    public static long ElementCount(ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (var extent in shape)
        {
            count = checked(count * extent);
        }

        return count;
    }

    public static int ElementSize(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Byte or torch.ScalarType.Int8 or torch.ScalarType.Bool => 1,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Int16 => 2,
        torch.ScalarType.Float32 or torch.ScalarType.Int32 => 4,
        torch.ScalarType.Float64 or torch.ScalarType.Int64 or torch.ScalarType.ComplexFloat32 => 8,
        torch.ScalarType.ComplexFloat64 => 16,
        _ => throw new NotSupportedException($"Element type {dtype} is not supported by the memory tiers."),
    };

    public static string Format(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}
