namespace FlexGen.Tensors.Tests.Npy;

using FlexGen.Tensors.Npy;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

public class NpyRoundTripTests
{
    static readonly ScalarType[] Types =
    [
        ScalarType.Float16, ScalarType.Float32, ScalarType.Float64, ScalarType.Int8, ScalarType.Int16,
        ScalarType.Int32, ScalarType.Int64, ScalarType.Byte, ScalarType.Bool,
    ];

    /// <summary>
    /// Property: for random dtypes, shapes (rank 0-4, zero-size dims included), random bit patterns (NaNs,
    /// infinities, negative zeros) and random strides, Write then Read/ReadInto returns the same bytes.
    /// </summary>
    [Fact]
    public void Write_then_Read_should_return_identical_tensors_for_random_shapes_and_dtypes()
    {
        using var scratch = new ScratchDirectory();
        var random = new Random(20261126);
        var cases = 0;
        var byType = new Dictionary<ScalarType, int>();
        AssertNoTensorLeak(() =>
        {
            for (var caseIndex = 0; caseIndex < 300; caseIndex++)
            {
                var type = Types[random.Next(Types.Length)];
                var rank = random.Next(5);
                var shape = Enumerable.Range(0, rank).Select(_ => (long)(random.Next(10) == 0 ? 0 : random.Next(1, 7))).ToArray();
                var transpose = rank >= 2 && random.Next(3) == 0;
                using var source = RandomTensor(random, type, transpose ? [.. shape[..^2], shape[^1], shape[^2]] : shape);
                using var written = transpose ? source.transpose(-1, -2) : source.alias();
                var path = scratch.File($"case{caseIndex}.npy");

                NpyFile.Write(path, written);

                var header = NpyFile.ReadHeader(path);
                Assert.Equal(type, header.DType);
                Assert.Equal(shape, header.Shape);
                Assert.Equal(0, header.DataOffset % 64);
                Assert.Equal(header.DataOffset + header.DataLength, new FileInfo(path).Length);

                using var expected = written.contiguous();
                if (random.Next(2) == 0)
                {
                    using var read = NpyFile.Read(path);
                    AssertSameBytes(expected, read, caseIndex);
                }
                else
                {
                    using var destination = empty(shape, type);
                    NpyFile.ReadInto(path, destination);
                    AssertSameBytes(expected, destination, caseIndex);
                }
                byType[type] = byType.GetValueOrDefault(type) + 1;
                cases++;
            }
        });
        Assert.Equal(300, cases);
        Assert.Equal(Types.Length, byType.Count); // every dtype was exercised
    }

    static Tensor RandomTensor(Random random, ScalarType type, long[] shape)
    {
        var tensor = empty(shape, type);
        var bytes = new byte[tensor.numel() * tensor.element_size()];
        random.NextBytes(bytes);
        if (type == ScalarType.Bool)
        {
            for (var i = 0; i < bytes.Length; i++)
            {
                bytes[i] &= 1;
            }
        }
        tensor.bytes = bytes;
        return tensor;
    }

    static void AssertSameBytes(Tensor expected, Tensor actual, int caseIndex)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.bytes.SequenceEqual(actual.bytes), $"case {caseIndex}: data differs");
    }
}
