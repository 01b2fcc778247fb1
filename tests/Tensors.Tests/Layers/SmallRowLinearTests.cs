namespace FlexGen.Tensors.Tests.Layers;

using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>The few-row linear kernel on libtorch's OpenMP team (decode at small batches on the CPU).</summary>
public sealed class SmallRowLinearTests
{
    [Fact]
    public void SmallRowLinear_should_be_available_wherever_the_cpu_has_avx2_and_fma()
    {
        // libtorch's libgomp and TorchSharp's data pointer are part of this project's linux-x64 runtime.
        Assert.Equal(Avx2.IsSupported && Fma.IsSupported, SmallRowLinear.Available);
    }

    [SkippableTheory]
    // Rows in blocks of four and one by one; output columns in pairs and an odd last one; on the team and on a serial thread.
    [InlineData(ScalarType.Float32, 1, 768, 7, true, false)]
    [InlineData(ScalarType.Float32, 3, 64, 10, false, false)]
    [InlineData(ScalarType.Float32, 4, 64, 9, true, true)]
    [InlineData(ScalarType.Float32, 8, 3072, 769, true, false)]
    [InlineData(ScalarType.Float32, 6, 8, 1, false, true)]
    [InlineData(ScalarType.BFloat16, 1, 768, 7, false, false)]
    [InlineData(ScalarType.BFloat16, 5, 64, 33, true, false)]
    [InlineData(ScalarType.BFloat16, 8, 2048, 130, true, true)]
    public void TryLinear_should_give_the_float32_sums_rounded_once_to_the_input_dtype(
        ScalarType dtype, int rows, int inFeatures, int outFeatures, bool withBias, bool serialThread)
    {
        Skip.IfNot(SmallRowLinear.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        var x = randn(rows, inFeatures, generator: new Generator(1)).to(dtype);
        var weight = randn(outFeatures, inFeatures, generator: new Generator(2)).to(dtype);
        var bias = withBias ? randn(outFeatures, generator: new Generator(3)).to(dtype) : null;

        // A thread kept serial (the pipeline's non-compute actors) runs the product alone, outside any team, and with
        // no dispose scope: its result is disposed here.
        Tensor? fromSerial = null;
        if (serialThread)
        {
            var thread = new Thread(() =>
            {
                OpenMpTeams.KeepSerial();
                fromSerial = SmallRowLinear.TryLinear(x, weight, bias);
            });
            thread.Start();
            thread.Join();
        }

        using var serialResult = fromSerial;
        var y = serialThread ? fromSerial : SmallRowLinear.TryLinear(x, weight, bias);

        Assert.NotNull(y);
        Assert.Equal(dtype, y.dtype);
        Assert.Equal([(long)rows, outFeatures], y.shape);
        Assert.True(y.is_contiguous());
        var x64 = x.to(ScalarType.Float64);
        var w64 = weight.to(ScalarType.Float64);
        var exact = nn.functional.linear(x64, w64, bias?.to(ScalarType.Float64)); // (rows, out)
        // float32 sums in another order than the exact one: within a few float32 units of the sum of magnitudes.
        var scale = nn.functional.linear(x64.abs(), w64.abs(), bias?.to(ScalarType.Float64).abs());
        var error = (y.to(ScalarType.Float64) - exact).abs();
        double rounding = dtype == ScalarType.BFloat16 ? Math.Pow(2, -8) : 0; // one rounding of the result to bfloat16
        Assert.True(error.le((exact.abs() * rounding) + (scale * 1e-6)).all().item<bool>(), $"max error {error.max().item<double>()}");
        if (dtype == ScalarType.Float32)
        {
            var torchProduct = nn.functional.linear(x, weight, bias);
            Assert.True(y.allclose(torchProduct, rtol: 1e-5, atol: 1e-4), "against libtorch's own float32 product");
        }
    }

    [SkippableTheory]
    // Rows in blocks of four and one by one, an odd last column; float16's specials and subnormals among the weights.
    [InlineData(1, 64, 7, true)]
    [InlineData(4, 768, 10, false)]
    [InlineData(7, 2048, 33, true)]
    public void TryLinear_should_multiply_a_float16_weight_as_if_widened_first(int rows, int inFeatures, int outFeatures, bool withBias)
    {
        Skip.IfNot(SmallRowLinear.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        var x = randn(rows, inFeatures, generator: new Generator(1));
        var stored = randn(outFeatures, inFeatures, generator: new Generator(2)).mul_(100).to(ScalarType.Float16);
        stored[0, 0] = 1e-7f; // a float16 subnormal
        stored[outFeatures - 1, 1] = 65504f; // float16's largest
        var storedBias = withBias ? randn(outFeatures, generator: new Generator(3)).to(ScalarType.Float16) : null;

        var y = SmallRowLinear.TryLinear(x, stored, storedBias);

        Assert.NotNull(y);
        Assert.Equal(ScalarType.Float32, y.dtype);
        // Widening is exact, so the sums are those of the float32 weight, in the same order: equal bit for bit.
        var widened = SmallRowLinear.TryLinear(x, stored.to(ScalarType.Float32), storedBias?.to(ScalarType.Float32))!;
        Assert.True(y.eq(widened).all().item<bool>(), $"max difference {(y - widened).abs().max().item<float>()}");

        // An infinite weight gives what libtorch's widened product gives.
        stored[1, 2] = float.PositiveInfinity;
        var withInfinity = SmallRowLinear.TryLinear(x, stored, storedBias)!;
        var reference = nn.functional.linear(x, stored.to(ScalarType.Float32), storedBias?.to(ScalarType.Float32));
        Assert.True(withInfinity[.., 1].isinf().all().item<bool>());
        Assert.True(withInfinity[.., 1].eq(reference[.., 1]).all().item<bool>());
    }

    [SkippableFact]
    public void TryLinear_should_keep_the_leading_shape_of_its_input()
    {
        Skip.IfNot(SmallRowLinear.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 16); // 6 rows
        var weight = randn(5, 16);

        var y = SmallRowLinear.TryLinear(x, weight, null)!;

        Assert.Equal([2L, 3L, 5L], y.shape);
        Assert.True(y.allclose(nn.functional.linear(x, weight), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void TryLinear_should_leave_to_libtorch_what_its_kernel_does_not_take()
    {
        using var scope = NewDisposeScope();
        var weight = randn(6, 16);
        Assert.True(SmallRowLinear.Takes(randn(8, 16), weight, randn(6)));
        Assert.False(SmallRowLinear.Takes(randn(9, 16), weight, null)); // more rows than MaxRows: libtorch is faster
        Assert.False(SmallRowLinear.Takes(zeros(0, 16), weight, null)); // no rows
        Assert.False(SmallRowLinear.Takes(randn(2, 12), randn(6, 12), null)); // inputs not a multiple of 8
        Assert.False(SmallRowLinear.Takes(randn(2, 16), randn(16, 6).t(), null)); // a column-major weight
        Assert.False(SmallRowLinear.Takes(randn(2, 16), weight.to(ScalarType.BFloat16), null)); // mixed dtypes
        Assert.False(SmallRowLinear.Takes(randn(2, 16).to(ScalarType.Float16), weight.to(ScalarType.Float16), null));
        Assert.True(SmallRowLinear.Takes(randn(2, 16), weight.to(ScalarType.Float16), randn(6).to(ScalarType.Float16))); // float16 under float32
        Assert.False(SmallRowLinear.Takes(randn(2, 16).to(ScalarType.BFloat16), weight.to(ScalarType.Float16), null)); // not under bfloat16
        Assert.False(SmallRowLinear.Takes(randn(2, 16), weight, randn(5))); // a bias of another length
        Assert.False(SmallRowLinear.Takes(randn(2, 8), weight, null)); // x's inputs are not the weight's
        Assert.Null(SmallRowLinear.TryLinear(randn(9, 16), weight, null));
    }

    [SkippableFact]
    public void TryLinear_should_leave_no_tensor_alive_but_its_result()
    {
        Skip.IfNot(SmallRowLinear.Available, "no AVX2/FMA on this CPU");
        LinearLeaks.AssertOnlyTheResultLives(SmallRowLinear.TryLinear);
    }
}
