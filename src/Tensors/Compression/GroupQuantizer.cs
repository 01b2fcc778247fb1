namespace FlexGen.Tensors.Compression;

using FlexGen.Tensors.Policies;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// FlexLLMGen's 4-bit asymmetric group-wise quantization (<c>TorchCompressedDevice.compress/decompress</c>),
/// bit for bit. Groups of <c>GroupSize</c> consecutive elements along <c>GroupDim</c> (padded with zeros to
/// whole groups) are mapped to 0..15 with <c>scale = 15 / (max - min)</c>.
/// </summary>
/// <remarks>
/// FlexLLMGen compresses in the dtype of the tensor it is given, so <see cref="QuantizationArithmetic"/> picks
/// which of its two cases to reproduce. <see cref="QuantizationArithmetic.Float16"/> (the KV cache, compressed on
/// the GPU in float16): every step runs in float32 and is rounded to float16 where FlexLLMGen's float16 arithmetic
/// rounds: float32 has more than twice float16's precision, so rounding a float32 sum, difference, product or
/// quotient of float16 values gives the correctly rounded float16 result, identical to CUDA's. Inputs are rounded
/// to float16 first, as FlexLLMGen's tensors are. <see cref="QuantizationArithmetic.Float32"/> (weights, compressed
/// on the CPU in float32 at load): the same steps in plain float32. Either way PyTorch evaluates <c>15 / t</c> as
/// <c>t.reciprocal() * 15</c> (two roundings; the fixtures confirm it), and the stored scales are float16: FlexLLMGen
/// copies its float32 (scale, min) into a float16 scale tensor, while the levels were computed with the float32 scale.
/// </remarks>
public static class GroupQuantizer
{

    /// <summary>
    /// Compresses <paramref name="input"/> (any floating dtype, values in float16 range) on its own device, in the
    /// <paramref name="arithmetic"/> FlexLLMGen uses where it compresses such a tensor (float16 for the cache, the default;
    /// float32 for weights at load).
    /// </summary>
    public static QuantizedTensor Compress(Tensor input, CompressionConfig config, QuantizationArithmetic arithmetic = QuantizationArithmetic.Float16)
    {
        Validate(config, (int)input.dim());
        if (!input.is_floating_point())
        {
            throw new ArgumentException($"only floating-point tensors can be compressed; this one is {input.dtype}", nameof(input));
        }
        var shape = input.shape;
        int groupDim = config.GroupDim, groupSize = config.GroupSize;
        var numGroups = NumGroups(shape[groupDim], groupSize);
        var levels = (1 << config.NumBits) - 1; // B = 15
        Func<Tensor, Tensor> round = arithmetic switch
        {
            QuantizationArithmetic.Float16 => RoundToHalf,
            QuantizationArithmetic.Float32 => t => t,
            _ => throw new ArgumentOutOfRangeException(nameof(arithmetic), arithmetic, "unknown quantization arithmetic"),
        };

        using var scope = NewDisposeScope();
        // Pad the group dim with zeros up to whole groups; zeros take part in min/max, as in FlexLLMGen.
        var x = round(input.to(ScalarType.Float32));
        var padLength = numGroups * groupSize - shape[groupDim];
        if (padLength > 0)
        {
            var padShape = (long[])shape.Clone();
            padShape[groupDim] = padLength;
            x = cat([x, zeros(padShape, ScalarType.Float32, x.device)], groupDim);
        }
        var data = x.reshape(Splice(shape, groupDim, numGroups, groupSize)); // (.., num_groups, group_size, ..)

        var mn = data.amin([groupDim + 1], keepdim: true);                  // (.., num_groups, 1, ..)
        var mx = data.amax([groupDim + 1], keepdim: true);
        var range = round(mx - mn);
        var scale = round(round(range.reciprocal()) * levels);
        var scaled = round(round(data - mn) * scale);
        // A constant group has scale inf and 0 * inf = NaN; it quantizes to 0 and decompresses to its min.
        var quantized = scaled.nan_to_num(0).clamp(0, levels).round().to(ScalarType.Byte);

        // Pack pairs along the group: even index in the high nibble, odd index in the low nibble.
        var even = quantized.slice(groupDim + 1, 0, groupSize, 2);
        var odd = quantized.slice(groupDim + 1, 1, groupSize, 2);
        var packed = even.bitwise_left_shift(4).bitwise_or(odd).reshape(PackedShape(shape, config));
        // Float32: rounded to float16 only here, as FlexLLMGen's copy into its float16 scale tensor does.
        var scaleAndMin = cat([scale, mn], groupDim + 1).to(ScalarType.Float16); // (.., num_groups, 2, ..)

        return new QuantizedTensor(packed.MoveToOuterDisposeScope(), scaleAndMin.MoveToOuterDisposeScope(), shape, config);
    }

    /// <summary>
    /// Decompresses to the original shape. Float16 (the default) reproduces FlexLLMGen's float16 result bit
    /// for bit; Float32 (for CPU compute) skips the float16 roundings; other floating dtypes are cast from Float32.
    /// </summary>
    public static Tensor Decompress(QuantizedTensor quantized, ScalarType outputDtype = ScalarType.Float16)
    {
        if (!is_floating_point(outputDtype))
        {
            throw new ArgumentException($"the output dtype must be floating point, not {outputDtype}", nameof(outputDtype));
        }
        var config = quantized.Config;
        var shape = quantized.OriginalShape.ToArray();
        int groupDim = config.GroupDim, groupSize = config.GroupSize;
        var numGroups = NumGroups(shape[groupDim], groupSize);

        using var scope = NewDisposeScope();
        var packed = quantized.Packed.reshape(Splice(shape, groupDim, numGroups, groupSize / 2)); // (.., num_groups, group_size / 2, ..)
        var high = packed.bitwise_right_shift(4);
        var low = packed.bitwise_and(0xF);
        var values = stack([high, low], groupDim + 2)                         // (.., num_groups, group_size / 2, 2, ..)
            .reshape(Splice(shape, groupDim, numGroups, groupSize))           // (.., num_groups, group_size, ..)
            .to(ScalarType.Float32);
        var scaleAndMin = quantized.Scale.to(ScalarType.Float32);
        var scale = scaleAndMin.narrow(groupDim + 1, 0, 1);                   // (.., num_groups, 1, ..)
        var mn = scaleAndMin.narrow(groupDim + 1, 1, 1);

        var result = outputDtype == ScalarType.Float16
            ? RoundToHalf(RoundToHalf(values / scale) + mn)
            : values / scale + mn;
        var paddedShape = (long[])shape.Clone();
        paddedShape[groupDim] = numGroups * groupSize;
        var output = result.reshape(paddedShape).narrow(groupDim, 0, shape[groupDim]).to(outputDtype).contiguous();
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>Shape of the packed data for a tensor of <paramref name="shape"/>: group dim -> num_groups * group_size / 2.</summary>
    public static long[] PackedShape(IReadOnlyList<long> shape, CompressionConfig config)
    {
        var packed = shape.ToArray();
        packed[config.GroupDim] = NumGroups(shape[config.GroupDim], config.GroupSize) * (config.GroupSize / 2);
        return packed;
    }

    /// <summary>Shape of the scales for a tensor of <paramref name="shape"/>: group dim -> (num_groups, 2).</summary>
    public static long[] ScaleShape(IReadOnlyList<long> shape, CompressionConfig config) =>
        Splice(shape, config.GroupDim, NumGroups(shape[config.GroupDim], config.GroupSize), 2);

    /// <summary>Rejects a disabled config or a group dim the tensor does not have, naming the field.</summary>
    internal static void Validate(CompressionConfig config, int rank)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!config.Enabled)
        {
            throw new ArgumentException("CompressionConfig.Enabled is false: compression is switched off for this tensor", nameof(config));
        }
        // Bits, symmetry and group size are validated by CompressionConfig itself; what is left depends on the tensor.
        if (config.GroupDim >= rank)
        {
            throw new ArgumentOutOfRangeException(nameof(config),
                $"CompressionConfig.GroupDim = {config.GroupDim} is not a dimension of a rank-{rank} tensor (0..{rank - 1})");
        }
    }

    static long NumGroups(long length, int groupSize) => (length + groupSize - 1) / groupSize;

    /// <summary><paramref name="shape"/> with dimension <paramref name="dim"/> replaced by (<paramref name="outer"/>, <paramref name="inner"/>).</summary>
    static long[] Splice(IReadOnlyList<long> shape, int dim, long outer, long inner) =>
        [.. shape.Take(dim), outer, inner, .. shape.Skip(dim + 1)];

    /// <summary>Rounds float32 values to the nearest float16 (ties to even), keeping float32 storage.</summary>
    static Tensor RoundToHalf(Tensor x) => x.to(ScalarType.Float16).to(ScalarType.Float32);
}
