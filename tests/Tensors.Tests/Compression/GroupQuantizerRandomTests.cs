namespace FlexGen.Tensors.Tests.Compression;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;
using TorchSharp;
using Xunit.Abstractions;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

public class GroupQuantizerRandomTests(ITestOutputHelper output)
{
    /// <summary>Below this group range, 15 / range exceeds float16's largest value 65504.</summary>
    const float ScaleOverflowRange = 15f / 65504f;

    /// <summary>
    /// Error of each element in quanta of its own group ((max - min) / 15 of the zero-padded group),
    /// computed independently of the quantizer.
    /// </summary>
    internal static (Tensor ErrorInQuanta, Tensor Quantum) ErrorInQuanta(Tensor input, Tensor values, CompressionConfig config)
    {
        var x = input.to(ScalarType.Float32).movedim([config.GroupDim], [-1L]);  // (.., n)
        var n = x.shape[^1];
        var groups = (n + config.GroupSize - 1) / config.GroupSize;
        var padded = nn.functional.pad(x, [0, groups * config.GroupSize - n]);
        var grouped = padded.reshape([.. x.shape[..^1], groups, config.GroupSize]);
        var quantum = ((grouped.amax([-1], keepdim: true) - grouped.amin([-1], keepdim: true)) / 15)
            .expand(grouped.shape).reshape(padded.shape).narrow(-1, 0, n).movedim([-1L], [config.GroupDim]);
        var error = (values.to(ScalarType.Float32) - input.to(ScalarType.Float32)).abs();
        // A constant group has quantum 0 and must be exact.
        return (where(quantum.gt(0), error / quantum, error * 1e30f), quantum);
    }

    [Fact]
    public void Compress_then_Decompress_should_bound_the_error_by_half_a_quantum_for_random_tensors()
    {
        var random = new Random(4242);
        var generator = new Generator(4242);
        double worstFloat32 = 0, worstFloat16 = 0;
        long overflowGroups = 0;
        AssertNoTensorLeak(() =>
        {
            for (var caseIndex = 0; caseIndex < 60; caseIndex++)
            {
                var rank = random.Next(1, 5);
                var shape = Enumerable.Range(0, rank).Select(_ => (long)random.Next(1, 40)).ToArray();
                var config = new CompressionConfig(4, 2 * random.Next(1, 40), random.Next(rank), Symmetric: false);
                var magnitude = Math.Pow(10, random.Next(-3, 3));

                using (NewDisposeScope())
                {
                    var input = (randn(shape, generator: generator) * magnitude + magnitude * random.NextDouble())
                        .to(ScalarType.Float16);
                    using var quantized = GroupQuantizer.Compress(input, config);
                    Assert.Equal(GroupQuantizer.PackedShape(shape, config), quantized.Packed.shape);
                    Assert.Equal(GroupQuantizer.ScaleShape(shape, config), quantized.Scale.shape);

                    var values32 = GroupQuantizer.Decompress(quantized, ScalarType.Float32);
                    var values16 = GroupQuantizer.Decompress(quantized);
                    Assert.Equal(shape, values32.shape);
                    Assert.Equal(ScalarType.Float16, values16.dtype);

                    // Rounding to the nearest level: half a quantum, plus float16 rounding of (x - min) * scale
                    // (<= 15 * 2^-11 quanta) and of the scale itself. Exception, as in FlexLLMGen: a group whose
                    // range is under 15 / 65504 has a float16 scale of +inf and decompresses to its minimum.
                    var (error32, quantum) = ErrorInQuanta(input, values32, config);
                    var scaleOverflows = (quantum * 15).lt(ScaleOverflowRange);
                    var allowed = where(scaleOverflows, 15.0f, 0.51f);
                    var worst32 = (error32 - allowed).max().item<float>();
                    Assert.True(worst32 <= 0, $"case {caseIndex} {config} shape ({string.Join(",", shape)}): {worst32} quanta over the bound");
                    // The float16 result adds at most one float16 rounding of (q / scale) and one of the value.
                    var (error16, _) = ErrorInQuanta(input, values16, config);
                    var slack = (GroupQuantizerFixtureTests.Float16Ulp(quantum * 15) +
                                 GroupQuantizerFixtureTests.Float16Ulp(values16.to(ScalarType.Float32).abs())) / quantum.clamp_min(1e-30f);
                    var excess = (error16 - slack - allowed).max().item<float>();
                    Assert.True(excess <= 0, $"case {caseIndex}: float16 output {excess} quanta beyond the bound");
                    overflowGroups += scaleOverflows.sum().item<long>();
                    worstFloat32 = Math.Max(worstFloat32, where(scaleOverflows, 0f, error32).max().item<float>());
                    worstFloat16 = Math.Max(worstFloat16, where(scaleOverflows, 0f, error16).max().item<float>());
                }
            }
        });
        output.WriteLine($"worst error: {worstFloat32:G4} quanta (float32 output), {worstFloat16:G4} quanta (float16 output); " +
                         $"{overflowGroups} elements in groups whose scale overflowed float16");
    }

    [Fact]
    public void Compress_should_pad_with_zeros_that_take_part_in_the_group_range()
    {
        // One group of 4 along dim 0 over a length-3 dim: the padding zero widens [2, 4] to [0, 4].
        using var input = tensor(new float[] { 2, 3, 4 }, ScalarType.Float16);
        using var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 0, false));

        using var scale = quantized.Scale.to(ScalarType.Float32);
        Assert.Equal([1L, 2], quantized.Scale.shape);
        Assert.Equal(new[] { 3.75f, 0f }, scale.data<float>().ToArray()); // 15 / (4 - 0), min 0
        // 2 * 3.75 = 7.5 -> 8 (ties to even), 3 * 3.75 = 11.25 -> 11, 4 * 3.75 = 15, pad 0.
        Assert.Equal(new byte[] { 8 << 4 | 11, 15 << 4 | 0 }, quantized.Packed.data<byte>().ToArray());
        using var values = GroupQuantizer.Decompress(quantized, ScalarType.Float32);
        Assert.Equal(new[] { 8 / 3.75f, 11 / 3.75f, 4f }, values.data<float>().ToArray());
    }

    [Fact]
    public void Compress_should_store_an_infinite_scale_for_a_tiny_range_as_FlexLLMGen_does()
    {
        // Range 2^-13 < 15 / 65504: the float16 scale overflows to +inf; every value decompresses to the minimum.
        using var input = tensor(new float[] { 0.125f, 0.125f + 1f / 8192, 0.125f, 0.125f }, ScalarType.Float16);
        using var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 0, false));
        using var scale = quantized.Scale.to(ScalarType.Float32);
        using var values = GroupQuantizer.Decompress(quantized, ScalarType.Float32);

        Assert.Equal(new[] { float.PositiveInfinity, 0.125f }, scale.data<float>().ToArray());
        Assert.Equal(new byte[] { 0 << 4 | 15, 0 }, quantized.Packed.data<byte>().ToArray());
        Assert.Equal(new[] { 0.125f, 0.125f, 0.125f, 0.125f }, values.data<float>().ToArray());
    }

    [Fact]
    public void Compress_should_keep_a_constant_group_exact()
    {
        using var input = full(new long[] { 3, 64 }, -1.5f, ScalarType.Float16);
        using var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 64, 1, false));
        using var values = GroupQuantizer.Decompress(quantized);

        Assert.Equal(0, CountNonZero(quantized.Packed));
        Assert.True(SameTensor(input, values));
        using var zero = zeros(5, 7, dtype: ScalarType.Float16);
        using var zeroQuantized = GroupQuantizer.Compress(zero, new CompressionConfig(4, 4, 0, false));
        using var zeroValues = GroupQuantizer.Decompress(zeroQuantized, ScalarType.Float32);
        Assert.Equal(0, CountNonZero(zeroValues));

        static long CountNonZero(Tensor t)
        {
            using var count = t.count_nonzero();
            return count.item<long>();
        }
    }

    [Fact]
    public void Compress_should_round_float32_input_to_float16_first()
    {
        using var scope = NewDisposeScope();
        var input32 = randn(new long[] { 70, 9 }, generator: new Generator(7));
        var input16 = input32.to(ScalarType.Float16);
        var config = new CompressionConfig(4, 64, 0, false);

        using var from32 = GroupQuantizer.Compress(input32, config);
        using var from16 = GroupQuantizer.Compress(input16, config);

        Assert.True(SameTensor(from16.Packed, from32.Packed));
        Assert.True(SameTensor(from16.Scale, from32.Scale));
    }

    [Fact]
    public void Compress_should_treat_a_strided_view_like_its_contiguous_copy()
    {
        using var scope = NewDisposeScope();
        var wide = randn(new long[] { 96, 130 }, generator: new Generator(11)).to(ScalarType.Float16);
        var view = wide.t();                       // (130, 96), not contiguous
        var copy = view.contiguous();
        var config = new CompressionConfig(4, 64, 0, false);

        using var fromView = GroupQuantizer.Compress(view, config);
        using var fromCopy = GroupQuantizer.Compress(copy, config);

        Assert.False(view.is_contiguous());
        Assert.True(SameTensor(fromCopy.Packed, fromView.Packed));
        Assert.True(SameTensor(fromCopy.Scale, fromView.Scale));
    }

    [Fact]
    public void Compress_and_Decompress_should_leave_no_tensor_behind()
    {
        using var input = FlexGen.Tensors.Npy.NpyFile.Read(Fixture("compression", "gd1_input.npy"));
        Tensor? packed = null, scale = null;
        AssertNoTensorLeak(() =>
        {
            var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 64, 1, false));
            (packed, scale) = (quantized.Packed, quantized.Scale);
            GroupQuantizer.Decompress(quantized).Dispose();
            GroupQuantizer.Decompress(quantized, ScalarType.Float32).Dispose();
            quantized.Dispose();
        });
        Assert.True(packed!.IsInvalid);
        Assert.True(scale!.IsInvalid);
    }

    [Fact]
    public void Compress_inside_a_dispose_scope_should_move_its_result_to_that_scope()
    {
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (var outer = NewDisposeScope())
        {
            var input = ones(10, 10, dtype: ScalarType.Float16);
            var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 1, false));
            var values = GroupQuantizer.Decompress(quantized);
            Assert.False(quantized.Packed.IsInvalid);
            Assert.False(values.IsInvalid);
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
