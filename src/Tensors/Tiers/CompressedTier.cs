namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>
/// The compressed tier over any base tier (FlexGen's <c>TorchCompressedDevice</c>): a floating tensor is stored as
/// FlexLLMGen's 4-bit packed data (uint8, group dim -> num_groups * group_size / 2) and scales (float16, group dim ->
/// (num_groups, 2)), both tensors of the base tier. Bytes are accounted on the base tier; this tier counts tensors.
/// </summary>
public sealed class CompressedTier : MemoryTier
{
    /// <param name="arithmetic">
    /// How tensors written here are quantized: FlexLLMGen compresses weights at load on the CPU in float32
    /// (<see cref="QuantizationArithmetic.Float32"/>, for weight tiers) and the KV cache on the GPU in float16 (the default).
    /// </param>
    public CompressedTier(MemoryTier baseTier, CompressionConfig config, QuantizationArithmetic arithmetic = QuantizationArithmetic.Float16)
        : base($"compressed({baseTier.Name})", baseTier.Home, long.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (baseTier is CompressedTier)
        {
            throw new ArgumentException("A compressed tier cannot sit on another compressed tier.", nameof(baseTier));
        }

        if (config.NumBits != 4 || config.GroupSize < 2 || config.GroupSize % 2 != 0 || config.Symmetric || !config.Enabled)
        {
            throw new ArgumentException($"Compressed tier: {config} is not FlexLLMGen's format (4 bits, even group size, asymmetric, enabled).", nameof(config));
        }

        if (baseTier is MixedTier && config.GroupDim <= MixedTier.SplitDim)
        {
            throw new ArgumentException($"Compressed tier over a mixed tier: GroupDim {config.GroupDim} must be past the split dimension {MixedTier.SplitDim} (the scales insert a dimension after the group dimension).", nameof(config));
        }

        if (!Enum.IsDefined(arithmetic))
        {
            throw new ArgumentOutOfRangeException(nameof(arithmetic), arithmetic, "Compressed tier: unknown quantization arithmetic.");
        }

        Base = baseTier;
        Config = config;
        Arithmetic = arithmetic;
    }

    public MemoryTier Base { get; }

    public CompressionConfig Config { get; }

    /// <summary>The arithmetic of the quantization when a plain tensor is copied in (bytes copied between compressed tensors stay as they are).</summary>
    public QuantizationArithmetic Arithmetic { get; }

    public override CompressedTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null)
    {
        name ??= DefaultName("compressed");
        if (!torch.is_floating_point(dtype))
        {
            throw new ArgumentException($"Compressed tensor '{name}': only floating-point tensors can be compressed, not {dtype}.", nameof(dtype));
        }

        if (Config.GroupDim >= shape.Length)
        {
            throw new ArgumentException($"Compressed tensor '{name}': GroupDim {Config.GroupDim} is not a dimension of shape {TensorShapes.Format(shape.ToArray())}.", nameof(shape));
        }

        var original = shape.ToArray();
        var packed = Base.Allocate(GroupQuantizer.PackedShape(original, Config), torch.ScalarType.Byte, $"{name}.packed");
        try
        {
            var scales = Base.Allocate(GroupQuantizer.ScaleShape(original, Config), torch.ScalarType.Float16, $"{name}.scale");
            Accounting.Reserve(0, name);
            return new CompressedTensor(this, original, dtype, name, packed, scales);
        }
        catch
        {
            packed.Dispose();
            throw;
        }
    }
}

/// <summary>A tensor of a compressed tier: packed data and scales on the base tier, owned by this tensor.</summary>
public sealed class CompressedTensor : TieredTensor
{
    internal CompressedTensor(CompressedTier tier, ReadOnlySpan<long> shape, torch.ScalarType dtype, string name, TieredTensor packed, TieredTensor scales)
        : base(tier, shape, dtype, name)
    {
        Packed = packed;
        Scales = scales;
    }

    public new CompressedTier Tier => (CompressedTier)base.Tier;

    public CompressionConfig Config => Tier.Config;

    /// <summary>uint8 packed 4-bit data on the base tier.</summary>
    public TieredTensor Packed { get; }

    /// <summary>float16 (scale, min) pairs on the base tier.</summary>
    public TieredTensor Scales { get; }

    /// <summary>Bytes actually stored (packed + scales).</summary>
    public long StoredBytes => Packed.Bytes + Scales.Bytes;

    protected override void ReleaseResources()
    {
        Packed.Dispose();
        Scales.Dispose();
        base.Tier.Accounting.Release(0);
    }
}
