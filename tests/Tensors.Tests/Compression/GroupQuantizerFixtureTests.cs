namespace FlexGen.Tensors.Tests.Compression;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using Xunit.Abstractions;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

/// <summary>Against FlexLLMGen's own output (tests/Fixtures/compression: 4 bits, groups of 64, asymmetric).</summary>
public class GroupQuantizerFixtureTests(ITestOutputHelper output)
{
    static CompressionConfig FixtureConfig(int groupDim) => new(4, 64, groupDim, Symmetric: false);

    static Tensor Load(int groupDim, string part) => NpyFile.Read(Fixture("compression", $"gd{groupDim}_{part}.npy"));

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Compress_should_reproduce_FlexLLMGen_packed_bytes_and_scales(int groupDim)
    {
        using var input = Load(groupDim, "input");
        using var expectedPacked = Load(groupDim, "packed");
        using var expectedScale = Load(groupDim, "scale");

        using var quantized = GroupQuantizer.Compress(input, FixtureConfig(groupDim));

        Assert.Equal(expectedPacked.shape, quantized.Packed.shape);
        Assert.Equal(expectedScale.shape, quantized.Scale.shape);
        Assert.Equal(input.shape, quantized.OriginalShape);

        // Compare nibble by nibble: a value off by one quantum would be explainable by float16 rounding of
        // the scale; anything else would not. This implementation reproduces FlexLLMGen's float16
        // arithmetic exactly, so it must match bit for bit: both counts must be zero.
        var (offByOne, offByMore, nibbles) = CompareNibbles(expectedPacked, quantized.Packed);
        var scaleDiffering = CountDifferingHalves(expectedScale, quantized.Scale);
        output.WriteLine($"gd{groupDim}: {offByOne} of {nibbles} values differ by one quantum, {offByMore} by more; " +
                         $"{scaleDiffering} of {expectedScale.numel()} scale/min values differ");
        Assert.Equal(0, offByMore);
        Assert.Equal(0, offByOne);
        Assert.Equal(0, scaleDiffering);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Decompress_should_reproduce_FlexLLMGen_float16_values(int groupDim)
    {
        using var input = Load(groupDim, "input");
        using var expected = Load(groupDim, "decompressed");
        var config = FixtureConfig(groupDim);

        // From FlexLLMGen's own packed data and scales, and from ours.
        using var fromFixture = new QuantizedTensor(Load(groupDim, "packed"), Load(groupDim, "scale"), input.shape, config);
        using var fromFixtureValues = GroupQuantizer.Decompress(fromFixture);
        using var ours = GroupQuantizer.Compress(input, config);
        using var ourValues = GroupQuantizer.Decompress(ours);

        Assert.Equal(ScalarType.Float16, fromFixtureValues.dtype);
        Assert.Equal(expected.shape, fromFixtureValues.shape);
        var differing = CountDifferingHalves(expected, fromFixtureValues);
        var differingOurs = CountDifferingHalves(expected, ourValues);
        output.WriteLine($"gd{groupDim}: {differing} (fixture data) / {differingOurs} (our data) of {expected.numel()} decompressed values differ");
        Assert.Equal(0, differing);
        Assert.Equal(0, differingOurs);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Decompress_to_float32_should_stay_within_float16_rounding_of_FlexLLMGen(int groupDim)
    {
        using var input = Load(groupDim, "input");
        using var expected = Load(groupDim, "decompressed");
        using var quantized = GroupQuantizer.Compress(input, FixtureConfig(groupDim));

        using var values = GroupQuantizer.Decompress(quantized, ScalarType.Float32);

        Assert.Equal(ScalarType.Float32, values.dtype);
        using var scope = NewDisposeScope();
        var expected32 = expected.to(ScalarType.Float32);
        var error = (values - expected32).abs();
        // FlexLLMGen rounds twice to float16: q / scale (magnitude up to the group range, 15 quanta) and the
        // sum with the minimum. Allow one float16 ulp of each.
        var (_, quantum) = GroupQuantizerRandomTests.ErrorInQuanta(input, values, FixtureConfig(groupDim));
        var bound = Float16Ulp(quantum * 15) + Float16Ulp(expected32.abs());
        var worst = (error / bound).max().item<float>();
        output.WriteLine($"gd{groupDim}: max |float32 - FlexLLMGen float16| = {error.max().item<float>():G4} " +
                         $"({worst:G3} of the float16 rounding bound)");
        Assert.True(worst <= 1.0f, $"float32 decompression is {worst} rounding bounds from FlexLLMGen's");
        var rounded = values.to(ScalarType.Float16);
        output.WriteLine($"gd{groupDim}: float32 output rounded once to float16 differs from FlexLLMGen's (rounded twice) " +
                         $"in {CountDifferingHalves(expected, rounded)} of {expected.numel()} values");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void Decompress_should_stay_within_half_a_quantum_of_the_input(int groupDim)
    {
        using var input = Load(groupDim, "input");
        using var quantized = GroupQuantizer.Compress(input, FixtureConfig(groupDim));
        using var values = GroupQuantizer.Decompress(quantized, ScalarType.Float32);

        using var scope = NewDisposeScope();
        var (errorInQuanta, _) = GroupQuantizerRandomTests.ErrorInQuanta(input, values, FixtureConfig(groupDim));
        var worst = errorInQuanta.max().item<float>();
        output.WriteLine($"gd{groupDim}: max |decompressed - input| = {worst:G4} quanta");
        Assert.True(worst <= 0.51f, $"error {worst} quanta");
    }

    internal static (long OffByOne, long OffByMore, long Count) CompareNibbles(Tensor expected, Tensor actual)
    {
        using var scope = NewDisposeScope();
        var expectedNibbles = Nibbles(expected);
        var actualNibbles = Nibbles(actual);
        var difference = (expectedNibbles - actualNibbles).abs();
        return (difference.eq(1).sum().item<long>(), difference.gt(1).sum().item<long>(), expectedNibbles.numel());

        static Tensor Nibbles(Tensor packed)
        {
            var wide = packed.to(ScalarType.Int16);
            return stack([wide.bitwise_right_shift(4), wide.bitwise_and(0xF)]);
        }
    }

    /// <summary>Float16 values whose bits differ (NaN equal to NaN only bit for bit).</summary>
    internal static long CountDifferingHalves(Tensor expected, Tensor actual)
    {
        using var scope = NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(ScalarType.Float16, expected.dtype);
        Assert.Equal(ScalarType.Float16, actual.dtype);
        var expectedBits = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(expected.contiguous().bytes);
        var actualBits = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(actual.contiguous().bytes);
        long differing = 0;
        for (var i = 0; i < expectedBits.Length; i++)
        {
            differing += expectedBits[i] != actualBits[i] ? 1 : 0;
        }
        return differing;
    }

    /// <summary>The spacing of float16 numbers at magnitude <paramref name="magnitude"/> (float32).</summary>
    internal static Tensor Float16Ulp(Tensor magnitude)
    {
        // 2^(floor(log2 |x|) - 10), and 2^-24 in the subnormal range.
        var exponent = magnitude.clamp_min(6.103515625e-05f).log2().floor();
        return pow(2.0f, exponent - 10);
    }
}
