namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>bfloat16 linears through MKL's cblas_gemm_bf16bf16f32, which this project's libtorch (linux-x64) exports.</summary>
public sealed class MklBFloat16GemmTests
{
    [Fact]
    public void MklBFloat16Gemm_should_be_found_in_this_libtorch_and_used_only_where_the_cpu_lacks_bfloat16_instructions()
    {
        Assert.True(MklBFloat16Gemm.Available);
        Assert.Equal(TorchRuntime.CpuMultipliesBFloat16 == false, MklBFloat16Gemm.Used);
        Assert.Equal(MklBFloat16Gemm.Used, TorchRuntime.CpuBFloat16ThroughMkl);
    }

    [Theory]
    [InlineData(1, true, false, false, 40, 24)]
    [InlineData(35, true, false, false, 40, 24)]
    [InlineData(35, false, false, false, 40, 24)]
    [InlineData(300, true, true, false, 40, 24)]
    [InlineData(35, true, false, true, 40, 24)]
    // 4096 inputs: blocks of 512 output columns (8 MiB widened), so 1100 outputs take three, the last one short.
    [InlineData(5, true, false, false, 4096, 1100)]
    [InlineData(5, false, false, true, 4096, 1100)]
    public void Linear_should_be_the_float32_product_of_its_bfloat16_operands_rounded_once(
        int rows, bool withBias, bool xTransposed, bool weightColumnMajor, int inFeatures, int outFeatures)
    {
        using var scope = NewDisposeScope();
        // (rows, in) as given, or a transposed view of an (in, rows) tensor; (out, in) row-major, or a view of an (in, out) one.
        var x = xTransposed
            ? randn(inFeatures, rows, generator: new Generator(1)).to(ScalarType.BFloat16).t()
            : randn(rows, inFeatures, generator: new Generator(1)).to(ScalarType.BFloat16);
        var weight = weightColumnMajor
            ? randn(inFeatures, outFeatures, generator: new Generator(2)).to(ScalarType.BFloat16).t()
            : randn(outFeatures, inFeatures, generator: new Generator(2)).to(ScalarType.BFloat16);
        var bias = withBias ? randn(outFeatures, generator: new Generator(3)).to(ScalarType.BFloat16) : null;

        var y = MklBFloat16Gemm.Linear(x, weight, bias);

        var exact = nn.functional.linear(x.to(ScalarType.Float32), weight.to(ScalarType.Float32), bias?.to(ScalarType.Float32));
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.Equal([(long)rows, outFeatures], y.shape);
        Assert.True(y.is_contiguous());
        // One rounding to bfloat16 (8 significant bits): within half a unit of the last place, 2^-8 of the value, plus
        // float32's own summation order.
        var error = (y.to(ScalarType.Float32) - exact).abs();
        Assert.True(error.le(exact.abs() * Math.Pow(2, -8) + 1e-3).all().item<bool>(), $"max error {error.max().item<float>()}");
        // Not the product of some other rounding: libtorch's float32 product rounded once gives the same numbers but where
        // the two summation orders straddle a rounding boundary.
        var rounded = exact.to(ScalarType.BFloat16);
        Assert.True(y.eq(rounded).to(ScalarType.Float32).mean().item<float>() > 0.95);
    }

    [Fact]
    public void Linear_should_keep_the_input_shape_and_take_empty_sizes()
    {
        using var scope = NewDisposeScope();
        var weight = randn(6, 4).to(ScalarType.BFloat16);
        Assert.Equal([2L, 3L, 6L], MklBFloat16Gemm.Linear(randn(2, 3, 4).to(ScalarType.BFloat16), weight, null).shape);
        Assert.Equal([0L, 6L], MklBFloat16Gemm.Linear(zeros(0, 4, dtype: ScalarType.BFloat16), weight, null).shape);
        // No inputs to sum: the bias alone, or zeros.
        var bias = arange(6, dtype: ScalarType.BFloat16);
        var noInputs = zeros(3, 0, dtype: ScalarType.BFloat16);
        Assert.True(MklBFloat16Gemm.Linear(noInputs, zeros(6, 0, dtype: ScalarType.BFloat16), bias).eq(bias.expand(3, 6)).all().item<bool>());
        Assert.True(MklBFloat16Gemm.Linear(noInputs, zeros(6, 0, dtype: ScalarType.BFloat16), null).eq(zeros(3, 6, dtype: ScalarType.BFloat16)).all().item<bool>());
    }

    [Fact]
    public void Linear_should_refuse_mismatched_shapes_and_other_dtypes_with_what_it_got()
    {
        using var scope = NewDisposeScope();
        var x = randn(3, 4).to(ScalarType.BFloat16);
        var shape = Assert.Throws<ArgumentException>(() => MklBFloat16Gemm.Linear(x, randn(6, 5).to(ScalarType.BFloat16), null));
        Assert.Contains("(3, 4)", shape.Message);
        Assert.Contains("(6, 5)", shape.Message);
        var biasShape = Assert.Throws<ArgumentException>(() => MklBFloat16Gemm.Linear(x, randn(6, 4).to(ScalarType.BFloat16), randn(5).to(ScalarType.BFloat16)));
        Assert.Equal("bias", biasShape.ParamName);
        var dtype = Assert.Throws<ArgumentException>(() => MklBFloat16Gemm.Linear(x, randn(6, 4), null));
        Assert.Contains("Float32", dtype.Message);
    }

    [Fact]
    public void TryLinear_should_leave_float32_to_libtorch_and_take_bfloat16_where_used()
    {
        using var scope = NewDisposeScope();
        var x = randn(5, 8);
        var weight = randn(3, 8);
        Assert.Null(MklBFloat16Gemm.TryLinear(x, weight, null));
        var product = MklBFloat16Gemm.TryLinear(x.to(ScalarType.BFloat16), weight.to(ScalarType.BFloat16), null);
        Assert.Equal(MklBFloat16Gemm.Used, product is not null);
    }

    [Fact]
    public void Linear_should_leave_no_tensor_alive_but_its_result() => LinearLeaks.AssertOnlyTheResultLives(MklBFloat16Gemm.Linear);
}
