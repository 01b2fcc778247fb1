namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class HalfConversionTests
{
    [Fact]
    public unsafe void Every_float16_value_should_widen_as_libtorch_widens_it()
    {
        // All 65536 bit patterns, then 3 more so the scalar tail runs too.
        var bits = Enumerable.Range(0, 65536 + 3).Select(n => (ushort)(n % 65536)).ToArray();
        var widened = new float[bits.Length];
        fixed (ushort* source = bits)
        fixed (float* destination = widened)
        {
            HalfConversion.ToSingle(source, destination, bits.Length);
        }

        using var half = torch.empty([bits.Length], ScalarType.Float16);
        bits.AsSpan().CopyTo(new Span<ushort>(TensorMemory.Pointer(half), bits.Length));
        using var expected = half.to(ScalarType.Float32);
        var reference = expected.data<float>().ToArray();
        for (int n = 0; n < bits.Length; n++)
        {
            Assert.True(float.IsNaN(reference[n]) ? float.IsNaN(widened[n]) : BitConverter.SingleToInt32Bits(reference[n]) == BitConverter.SingleToInt32Bits(widened[n]),
                $"0x{bits[n]:X4}: {widened[n]} instead of {reference[n]}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_float16_disk_tensor_should_arrive_widened_to_float32_with_libtorchs_values(bool directIo)
    {
        // Chunks of 4 KiB: the 3 x 3001 values span several chunks and end inside one.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        using var values = TierTestBed.RandomTensor([3, 3001], ScalarType.Float16, seed: 5);
        using var onDisk = bed.Tiers.Disk.Allocate([3, 3001], ScalarType.Float16, "w");
        TierCopy.CopyFrom(onDisk, null, values);
        using var widened = bed.Tiers.Gpu.Allocate([3, 3001], ScalarType.Float32, "w@gpu");
        TierCopy.CopyAs(widened, onDisk);
        using var expected = values.to(ScalarType.Float32);
        Assert.True(TierTestBed.BitEqual(expected, widened.Data));
    }

    [Fact]
    public void Dummy_random_weights_larger_than_the_drawn_values_should_repeat_them_and_keep_their_distribution()
    {
        using var scope = NewDisposeScope();
        var spec = new WeightSpec("w", [3, DummyWeights.DrawnElements], ScalarType.Float16, WeightInit.NormScale);
        using var filled = torch.empty([3, DummyWeights.DrawnElements], ScalarType.Float16);
        DummyWeights.FillRandom(filled, spec, seed: 7);
        Assert.True(TierTestBed.BitEqual(filled[0], filled[2]));
        using var asFloat = filled.to(ScalarType.Float32);
        Assert.InRange(asFloat.mean().item<float>(), 0.999, 1.001); // 1 + normal(0, 0.02)
        Assert.InRange(asFloat.std().item<float>(), 0.019, 0.021);
    }
}
