using TorchSharp;

namespace FlexGen.Tensors.Models;

/// <summary>How dummy (random) weights fill a tensor; the model family sets it, so dummy init never reads names.</summary>
public enum WeightInit
{
    /// <summary>normal(0, std): matrices, embeddings, biases.</summary>
    Normal,

    /// <summary>1 + normal(0, std): a norm's scale, so a random model keeps its activations in range.</summary>
    NormScale,
}

/// <summary>
/// One stored weight tensor: its file name (relative to the model folder, no extension), its shape, its stored
/// dtype and how dummy weights fill it. Compared by value (shape element by element).
/// </summary>
public sealed record WeightSpec
{
    public WeightSpec(string fileName, IReadOnlyList<long> shape, torch.ScalarType dtype, WeightInit init = WeightInit.Normal)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fileName);
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Count == 0 || shape.Any(d => d < 1))
            throw new ArgumentException(
                $"Weight '{fileName}': shape ({string.Join(", ", shape)}) must have rank >= 1 and every dimension >= 1.",
                nameof(shape));
        FileName = fileName;
        Shape = shape.ToArray();
        Dtype = dtype;
        Init = init;
    }

    /// <summary>File name in the model folder, as the model family names it.</summary>
    public string FileName { get; }

    public IReadOnlyList<long> Shape { get; }

    public torch.ScalarType Dtype { get; }

    /// <summary>How dummy random weights fill this tensor.</summary>
    public WeightInit Init { get; }

    public int Rank => Shape.Count;

    public long ElementCount => Shape.Aggregate(1L, (acc, d) => checked(acc * d));

    /// <summary>Bytes of the uncompressed tensor.</summary>
    public long Bytes => checked(ElementCount * DtypeSize(Dtype));

    public bool Equals(WeightSpec? other) =>
        other is not null && FileName == other.FileName && Dtype == other.Dtype && Init == other.Init &&
        Shape.SequenceEqual(other.Shape);

    public override int GetHashCode() => HashCode.Combine(FileName, Dtype, Shape.Count, Shape[0]);

    public override string ToString() => $"{FileName} ({string.Join(", ", Shape)}) {Dtype}";

    /// <summary>Bytes per element of the dtypes weights and caches are stored in.</summary>
    public static int DtypeSize(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 2,
        torch.ScalarType.Float32 => 4,
        torch.ScalarType.Byte or torch.ScalarType.Int8 or torch.ScalarType.Bool => 1,
        torch.ScalarType.Int32 => 4,
        torch.ScalarType.Int64 or torch.ScalarType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "No byte size known for this dtype."),
    };
}
