namespace FlexGen.Tensors.Tests.Compression;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using Xunit.Abstractions;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

/// <summary>
/// <see cref="QuantizationArithmetic.Float32"/>: FlexLLMGen's load-time weight quantization (float32 on the CPU),
/// against a scalar float32 computation written out element by element.
/// </summary>
public class GroupQuantizerArithmeticTests(ITestOutputHelper output)
{
    /// <summary>
    /// FlexLLMGen's CPU compress, one group at a time in C# floats (IEEE single, like PyTorch's CPU float32):
    /// min and max over the zero-padded group, <c>scale = (1 / (max - min)) * 15</c> (PyTorch's <c>15 / t</c>),
    /// <c>level = round_half_even(clamp((x - min) * scale, 0, 15))</c> with the float32 scale; the stored
    /// (scale, min) pairs are rounded to float16. Returns the levels (.., padded n) and the pairs (.., groups, 2),
    /// group dim moved last.
    /// </summary>
    static (byte[] Levels, Half[] ScaleAndMin) ScalarReference(Tensor input, CompressionConfig config)
    {
        using var scope = NewDisposeScope();
        var lastDim = input.to(ScalarType.Float32).movedim([config.GroupDim], [-1L]).contiguous(); // (.., n)
        var n = (int)lastDim.shape[^1];
        var values = lastDim.data<float>().ToArray();
        int rows = values.Length / n, groupSize = config.GroupSize, groups = (n + groupSize - 1) / groupSize;
        var levels = new byte[rows * groups * groupSize];
        var scaleAndMin = new Half[rows * groups * 2];
        var group = new float[groupSize];
        for (var r = 0; r < rows; r++)
        {
            for (var g = 0; g < groups; g++)
            {
                for (var i = 0; i < groupSize; i++)
                {
                    var index = g * groupSize + i;
                    group[i] = index < n ? values[r * n + index] : 0f;
                }

                float min = group.Min(), max = group.Max();
                float reciprocal = 1f / (max - min);
                float scale = reciprocal * 15f;
                for (var i = 0; i < groupSize; i++)
                {
                    float scaled = (group[i] - min) * scale;
                    // A constant group: 0 * inf is NaN, stored as level 0 (decompresses to the minimum).
                    levels[(r * groups + g) * groupSize + i] = float.IsNaN(scaled) ? (byte)0 : (byte)MathF.Round(Math.Clamp(scaled, 0f, 15f), MidpointRounding.ToEven);
                }

                scaleAndMin[(r * groups + g) * 2] = (Half)scale;
                scaleAndMin[(r * groups + g) * 2 + 1] = (Half)min;
            }
        }

        return (levels, scaleAndMin);
    }

    /// <summary>The quantizer's levels and (scale, min) pairs in <see cref="ScalarReference"/>'s layout.</summary>
    static (byte[] Levels, Half[] ScaleAndMin) Unpacked(QuantizedTensor quantized)
    {
        using var scope = NewDisposeScope();
        var gd = quantized.Config.GroupDim;
        var packed = quantized.Packed.movedim([gd], [-1L]).contiguous().data<byte>().ToArray();
        var levels = new byte[packed.Length * 2];
        for (var i = 0; i < packed.Length; i++)
        {
            levels[2 * i] = (byte)(packed[i] >> 4);
            levels[2 * i + 1] = (byte)(packed[i] & 0xF);
        }

        var scales = quantized.Scale.movedim([gd, gd + 1L], [-2L, -1L]).contiguous().data<Half>().ToArray();
        return (levels, scales);
    }

    public static TheoryData<long[], int, int> Shapes() => new()
    {
        { [130, 24], 64, 0 },     // weights: groups of 64 along dim 0, the last group padded
        { [37, 6, 16], 64, 0 },
        { [9, 12, 16], 8, 1 },
        { [5, 7, 20], 6, 2 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Float32_Compress_should_equal_a_scalar_float32_computation(long[] shape, int groupSize, int groupDim)
    {
        var config = new CompressionConfig(4, groupSize, groupDim, Symmetric: false);
        AssertNoTensorLeak(() =>
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator((ulong)(77 + groupSize));
            var input = (randn(shape, generator: generator) * 0.3).to(ScalarType.Float16);
            // One constant group (all zeros along the group dim at index 0 of the other dims): scale inf, levels 0.
            using (var first = input.narrow(groupDim, 0, Math.Min(groupSize, shape[groupDim])))
            {
                first.zero_();
            }

            using var quantized = GroupQuantizer.Compress(input, config, QuantizationArithmetic.Float32);
            var (expectedLevels, expectedScales) = ScalarReference(input, config);
            var (levels, scales) = Unpacked(quantized);
            Assert.Equal(expectedLevels, levels);
            Assert.Equal(expectedScales, scales);
            Assert.Contains(Half.PositiveInfinity, scales);
        });
    }

    [Fact]
    public void Float32_and_Float16_arithmetic_should_differ_on_the_model_weights_by_at_most_one_level()
    {
        // opt-tiny's fc1 weight of layer 0, quantized as FlexLLMGen quantizes weights (CompressionConfig.DefaultWeight).
        var file = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny", "decoder.layers.0.fc1.weight");
        AssertNoTensorLeak(() =>
        {
            using var weight = NpyFile.Read(file);
            using var float32 = GroupQuantizer.Compress(weight, CompressionConfig.DefaultWeight, QuantizationArithmetic.Float32);
            using var float16 = GroupQuantizer.Compress(weight, CompressionConfig.DefaultWeight);
            var (levels32, scales32) = Unpacked(float32);
            var (levels16, scales16) = Unpacked(float16);
            var differing = levels32.Zip(levels16).Count(p => p.First != p.Second);
            var apart = levels32.Zip(levels16).Max(p => Math.Abs(p.First - p.Second));
            var scalesDiffering = scales32.Zip(scales16).Count(p => p.First != p.Second);
            output.WriteLine($"{differing} of {levels32.Length} levels differ (at most {apart} apart); {scalesDiffering} of {scales32.Length} scale/min values differ");
            // Both store the same float16 minimum (odd entries); the scale may differ in its last bit (rounded once
            // instead of three times), and levels differ by one where the float16 roundings cross a rounding boundary.
            Assert.Equal(scales16.Where((_, i) => i % 2 == 1), scales32.Where((_, i) => i % 2 == 1));
            Assert.InRange(differing, 1, levels32.Length / 20);
            Assert.Equal(1, apart);
        });
    }

    [Fact]
    public void Compress_should_reject_an_unknown_arithmetic()
    {
        using var input = ones(4, 4);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() =>
            GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 0, Symmetric: false), (QuantizationArithmetic)7));
        Assert.Equal("arithmetic", error.ParamName);
    }
}
