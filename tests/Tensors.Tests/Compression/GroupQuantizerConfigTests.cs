namespace FlexGen.Tensors.Tests.Compression;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

public class GroupQuantizerConfigTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(5)]
    public void Compress_should_reject_a_group_dim_outside_the_tensor(int groupDim)
    {
        using var input = ones(8, 8, dtype: ScalarType.Float16);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => GroupQuantizer.Compress(input, new CompressionConfig(4, 4, groupDim, false)));
        Assert.Contains($"CompressionConfig.GroupDim = {groupDim}", error.Message);
        Assert.Contains("rank-2", error.Message);
    }

    [Fact]
    public void Compress_should_reject_a_disabled_config_and_integer_tensors()
    {
        using var input = ones(8, 8, dtype: ScalarType.Float16);
        var disabled = Assert.Throws<ArgumentException>(() => GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 0, false, Enabled: false)));
        Assert.Contains("CompressionConfig.Enabled", disabled.Message);
        using var integers = ones(8, 8, dtype: ScalarType.Int32);
        var integer = Assert.Throws<ArgumentException>(() => GroupQuantizer.Compress(integers, CompressionConfig.DefaultWeight));
        Assert.Contains("Int32", integer.Message);
    }

    [Fact]
    public void QuantizedTensor_should_reject_parts_whose_shape_or_dtype_do_not_fit_the_original_shape()
    {
        var config = new CompressionConfig(4, 64, 0, false);
        long[] shape = [200, 96];
        AssertNoTensorLeak(() =>
        {
            using var packed = zeros(128, 96, dtype: ScalarType.Byte);
            using var scale = zeros(4, 2, 96, dtype: ScalarType.Float16);
            using var shortPacked = zeros(100, 96, dtype: ScalarType.Byte);
            using var floatScale = zeros(4, 2, 96, dtype: ScalarType.Float32);

            var packedError = Assert.Throws<ArgumentException>(() => new QuantizedTensor(shortPacked, scale, shape, config));
            Assert.Contains("Byte (128, 96)", packedError.Message);
            var scaleError = Assert.Throws<ArgumentException>(() => new QuantizedTensor(packed, floatScale, shape, config));
            Assert.Contains("Float16 (4, 2, 96)", scaleError.Message);
            Assert.Equal([128L, 96], GroupQuantizer.PackedShape(shape, config));
            Assert.Equal([4L, 2, 96], GroupQuantizer.ScaleShape(shape, config));
        });
    }

    [Fact]
    public void Decompress_should_reject_an_integer_output_dtype()
    {
        using var input = ones(8, 8, dtype: ScalarType.Float16);
        using var quantized = GroupQuantizer.Compress(input, new CompressionConfig(4, 4, 0, false));
        var error = Assert.Throws<ArgumentException>(() => GroupQuantizer.Decompress(quantized, ScalarType.Int8));
        Assert.Contains("Int8", error.Message);
    }
}
