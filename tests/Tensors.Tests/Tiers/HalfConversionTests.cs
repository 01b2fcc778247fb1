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
    [InlineData(65539)] // the whole input widened in one call
    [InlineData(4096)]
    [InlineData(1000)]
    [InlineData(17)]
    public unsafe void Widening_in_place_segment_by_segment_should_equal_widening_into_other_memory(int segment) =>
        // Front to back, as the last stage of WidenInPlace runs: every bit pattern and 3 more.
        AssertWidenedInPlace(65536 + 3, (target, count) =>
        {
            var half = (ushort*)target + count;
            for (int at = 0; at < count; at += segment)
            {
                HalfConversion.ToSingle(half + at, target + at, Math.Min(segment, count - at));
            }
        });

    [Theory]
    [InlineData(65539, 2)] // every bit pattern and 3 more: the parallel stages, then a scalar tail
    [InlineData(65539, 3)]
    [InlineData(1 << 20, 2)] // several parallel stages
    [InlineData(200_003, 7)]
    [InlineData(65539, 1)]
    [InlineData(1, 2)]
    [InlineData(0, 2)]
    public unsafe void Widening_in_place_on_several_threads_should_equal_widening_into_other_memory(int count, int threads) =>
        AssertWidenedInPlace(count, (target, n) => HalfConversion.WidenInPlace(target, n, threads));

    private unsafe delegate void InPlaceWidening(float* target, int count);

    // The float16 values in the upper half of their float32 buffer, as a disk read leaves a weight, widened there by
    // widen: bit for bit what widening into other memory gives.
    private static unsafe void AssertWidenedInPlace(int count, InPlaceWidening widen)
    {
        var bits = Enumerable.Range(0, count).Select(n => (ushort)((n * 40503L) % 65536)).ToArray();
        var expected = new float[count];
        var buffer = new float[count];
        fixed (ushort* source = bits)
        fixed (float* destination = expected)
        fixed (float* target = buffer)
        {
            HalfConversion.ToSingle(source, destination, count);
            bits.AsSpan().CopyTo(new Span<ushort>((ushort*)target + count, count));
            widen(target, count);
        }

        for (int n = 0; n < count; n++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expected[n]) == BitConverter.SingleToInt32Bits(buffer[n]), $"value {n} (0x{bits[n]:X4}): {buffer[n]} instead of {expected[n]}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Several_float16_disk_tensors_copied_at_once_should_each_arrive_widened_with_libtorchs_values(bool directIo)
    {
        // Chunks of 4 KiB, so segments of 2048 values: tensors of one segment, of several ending inside one, of fewer
        // values than a disk block, and a float32 pair that is copied, not widened, in the same call.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        long[][] shapes = [[3, 3001], [7], [2048], [5, 1000]];
        var sources = new List<TieredTensor>();
        var expected = new List<Tensor>();
        var copies = new List<(DeviceTensor Destination, TieredTensor Source)>();
        try
        {
            for (int t = 0; t < shapes.Length; t++)
            {
                using var values = TierTestBed.RandomTensor(shapes[t], ScalarType.Float16, seed: 11 + t);
                var onDisk = bed.Tiers.Disk.Allocate(shapes[t], ScalarType.Float16, $"w{t}");
                sources.Add(onDisk);
                TierCopy.CopyFrom(onDisk, null, values);
                expected.Add(values.to(ScalarType.Float32));
                copies.Add((bed.Tiers.Gpu.Allocate(shapes[t], ScalarType.Float32, $"w{t}@gpu"), onDisk));
            }

            using var plain = TierTestBed.RandomTensor([9, 3], ScalarType.Float32, seed: 3);
            var plainOnDisk = bed.Tiers.Disk.Allocate([9, 3], ScalarType.Float32, "plain");
            sources.Add(plainOnDisk);
            TierCopy.CopyFrom(plainOnDisk, null, plain);
            expected.Add(plain.clone());
            copies.Add((bed.Tiers.Gpu.Allocate([9, 3], ScalarType.Float32, "plain@gpu"), plainOnDisk));

            var widening = TierCopy.CopyAs(copies);

            // Read, not yet widened: each float16 tensor's bytes sit in the upper half of its float32 buffer.
            Assert.False(widening.IsEmpty);
            using (var read = expected[2].to(ScalarType.Float16))
            {
                var upperHalf = new ReadOnlySpan<ushort>((ushort*)TensorMemory.Pointer(copies[2].Destination.Data) + 2048, 2048);
                Assert.True(upperHalf.SequenceEqual(new ReadOnlySpan<ushort>(TensorMemory.Pointer(read), 2048)));
            }

            widening.Complete(threads: 2);
            Assert.True(widening.IsEmpty);
            widening.Complete(); // nothing left: a second call changes nothing
            for (int t = 0; t < copies.Count; t++)
            {
                Assert.True(TierTestBed.BitEqual(expected[t], copies[t].Destination.Data), $"tensor {t} ({copies[t].Source.Name})");
            }
        }
        finally
        {
            foreach (var owned in copies.Select(c => (IDisposable)c.Destination).Concat(sources).Concat(expected))
            {
                owned.Dispose();
            }
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
        TierCopy.CopyAs(widened, onDisk).Complete();
        using var expected = values.to(ScalarType.Float32);
        Assert.True(TierTestBed.BitEqual(expected, widened.Data));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_truncated_float16_disk_file_should_fail_the_widening_copy_by_its_path_and_the_tier_should_stay_usable(bool directIo)
    {
        // The first tensor is read in several chunks, then the second's file turns out truncated: the call throws the
        // disk tier's typed error, and the next copy works.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        using (var good = TierTestBed.RandomTensor([4, 3000], ScalarType.Float16, seed: 21))
        using (var bad = TierTestBed.RandomTensor([5000], ScalarType.Float16, seed: 22))
        using (var goodOnDisk = bed.Tiers.Disk.Allocate([4, 3000], ScalarType.Float16, "good"))
        using (var badOnDisk = bed.Tiers.Disk.Allocate([5000], ScalarType.Float16, "bad"))
        using (var goodWidened = bed.Tiers.Gpu.Allocate([4, 3000], ScalarType.Float32, "good@gpu"))
        using (var badWidened = bed.Tiers.Gpu.Allocate([5000], ScalarType.Float32, "bad@gpu"))
        {
            TierCopy.CopyFrom(goodOnDisk, null, good);
            TierCopy.CopyFrom(badOnDisk, null, bad);
            File.WriteAllBytes(badOnDisk.Path, []);

            var error = Assert.Throws<DiskTierIOException>(() => TierCopy.CopyAs([(goodWidened, goodOnDisk), (badWidened, badOnDisk)]));
            Assert.Contains(badOnDisk.Path, error.Message);
            Assert.Contains("truncated", error.Message);

            TierCopy.CopyAs(goodWidened, goodOnDisk).Complete();
            using var expected = good.to(ScalarType.Float32);
            Assert.True(TierTestBed.BitEqual(expected, goodWidened.Data));
        }

        bed.AssertNothingLeft();
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
