namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class ConvertingCopyTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Several_float16_disk_tensors_copied_at_once_should_be_staged_then_converted_with_libtorchs_values(bool directIo)
    {
        // Chunks of 4 KiB: tensors read in several chunks, ending inside one, smaller than a disk block, and a float32
        // pair that is copied, not converted, in the same call.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        var pool = new CountingPool(bed.Tiers.Gpu);
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
                var destination = bed.Tiers.Gpu.Allocate(shapes[t], ScalarType.Float32, $"w{t}@gpu");
                destination.Data.fill_(-7);
                copies.Add((destination, onDisk));
            }

            using var plain = TierTestBed.RandomTensor([9, 3], ScalarType.Float32, seed: 3);
            var plainOnDisk = bed.Tiers.Disk.Allocate([9, 3], ScalarType.Float32, "plain");
            sources.Add(plainOnDisk);
            TierCopy.CopyFrom(plainOnDisk, null, plain);
            expected.Add(plain.clone());
            copies.Add((bed.Tiers.Gpu.Allocate([9, 3], ScalarType.Float32, "plain@gpu"), plainOnDisk));

            using var conversion = TierCopy.CopyAs(copies, pool);

            // Read, not yet converted: the float16 tensors sit in staging buffers rented from the pool, in their dtype,
            // and their destinations are untouched; the float32 one has arrived.
            Assert.False(conversion.IsEmpty);
            Assert.Equal(4, pool.Rented.Count);
            Assert.All(pool.Rented, staged => Assert.Equal(ScalarType.Float16, staged.Dtype));
            using (var read = expected[2].to(ScalarType.Float16))
            {
                Assert.Contains(pool.Rented, staged => staged.Data.shape.SequenceEqual(read.shape) && TierTestBed.BitEqual(read, staged.Data));
            }

            Assert.Equal(-7, Extreme(copies[0].Destination, max: true));
            Assert.True(TierTestBed.BitEqual(expected[^1], copies[^1].Destination.Data));

            conversion.Complete();
            Assert.True(conversion.IsEmpty);
            Assert.Empty(pool.Rented); // every staging buffer given back
            conversion.Complete(); // nothing left: a second call changes nothing
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

            pool.Dispose();
        }

        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(TierKind.Cpu)]
    [InlineData(TierKind.Disk)]
    public void A_converting_copy_disposed_before_it_is_completed_should_give_back_what_it_staged_and_leave_the_destination(TierKind from)
    {
        using var bed = new TierTestBed();
        var pool = new CountingPool(bed.Tiers.Gpu);
        using (var values = TierTestBed.RandomTensor([40, 30], ScalarType.Float16, seed: 8))
        using (var home = bed.Tiers[from].Allocate([40, 30], ScalarType.Float16, "w"))
        using (var destination = bed.Tiers.Gpu.Allocate([40, 30], ScalarType.Float32, "w@gpu"))
        {
            TierCopy.CopyFrom(home, null, values);
            destination.Data.fill_(-7);
            var conversion = TierCopy.CopyAs(destination, home, pool);
            Assert.Equal(from == TierKind.Disk ? 1 : 0, pool.Rented.Count); // a home in memory is converted from where it is
            conversion.Dispose();
            Assert.Empty(pool.Rented);
            Assert.Equal(-7, Extreme(destination, max: true));
            conversion.Complete(); // disposed: nothing left to convert
            Assert.Equal(-7, Extreme(destination, max: false));
        }

        pool.Dispose();
        bed.AssertNothingLeft();
    }

    [Fact]
    public void A_converting_copy_should_keep_the_sources_its_compute_multiplies_as_stored_until_disposed()
    {
        using var bed = new TierTestBed();
        var pool = new CountingPool(bed.Tiers.Gpu);
        using (var matrix = new Float16OnDisk(bed, [40, 32], "matrix", seed: 8))
        using (var vector = new Float16OnDisk(bed, [32], "vector", seed: 9))
        {
            matrix.Target.Data.fill_(-7);
            var conversion = TierCopy.CopyAs([(matrix.Target, matrix.OnDisk), (vector.Target, vector.OnDisk)], pool);

            conversion.Complete(source => source.Data.dim() == 2);

            // The matrix stays as read, in float16, its target untouched; the vector is converted and its staging given back.
            var kept = conversion.KeptSource(matrix.Target);
            Assert.NotNull(kept);
            Assert.Equal(ScalarType.Float16, kept.Dtype);
            Assert.True(TierTestBed.BitEqual(matrix.Values, kept.Data));
            Assert.Equal(-7, Extreme(matrix.Target, max: true));
            Assert.Null(conversion.KeptSource(vector.Target));
            using (var widened = vector.Values.to(ScalarType.Float32))
            {
                Assert.True(TierTestBed.BitEqual(widened, vector.Target.Data));
            }

            Assert.Single(pool.Rented);
            Assert.False(conversion.IsEmpty);

            conversion.Complete(); // kept is kept: a later call converts nothing
            Assert.Same(kept, conversion.KeptSource(matrix.Target));
            Assert.Equal(-7, Extreme(matrix.Target, max: true));

            conversion.Dispose();
            Assert.Empty(pool.Rented);
            Assert.Null(conversion.KeptSource(matrix.Target));
        }

        pool.Dispose();
        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_float16_disk_tensor_should_arrive_converted_to_float32_with_libtorchs_values(bool directIo)
    {
        // No pool: the staging buffer is made and freed by the copy. Chunks of 4 KiB: the 3 x 3001 values span several
        // chunks and end inside one.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        using var values = TierTestBed.RandomTensor([3, 3001], ScalarType.Float16, seed: 5);
        using var onDisk = bed.Tiers.Disk.Allocate([3, 3001], ScalarType.Float16, "w");
        TierCopy.CopyFrom(onDisk, null, values);
        using var converted = bed.Tiers.Gpu.Allocate([3, 3001], ScalarType.Float32, "w@gpu");
        using (var conversion = TierCopy.CopyAs(converted, onDisk))
        {
            conversion.Complete();
        }

        using var expected = values.to(ScalarType.Float32);
        Assert.True(TierTestBed.BitEqual(expected, converted.Data));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_truncated_float16_disk_file_should_fail_the_converting_copy_by_its_path_give_back_the_staging_and_leave_the_tier_usable(bool directIo)
    {
        // The first tensor is read in several chunks, then the second's file turns out truncated: the call throws the
        // disk tier's typed error, every staging buffer is back in the pool, and the next copy works.
        using var bed = new TierTestBed(directIo: directIo, chunkBytes: 4096);
        var pool = new CountingPool(bed.Tiers.Gpu);
        using (var good = new Float16OnDisk(bed, [4, 3000], "good", seed: 21))
        using (var bad = new Float16OnDisk(bed, [5000], "bad", seed: 22))
        {
            File.WriteAllBytes(bad.OnDisk.Path, []);

            var error = Assert.Throws<DiskTierIOException>(() => TierCopy.CopyAs([(good.Target, good.OnDisk), (bad.Target, bad.OnDisk)], pool));
            Assert.Contains(bad.OnDisk.Path, error.Message);
            Assert.Contains("truncated", error.Message);
            Assert.Empty(pool.Rented);

            using (var conversion = TierCopy.CopyAs(good.Target, good.OnDisk, pool))
            {
                conversion.Complete();
            }

            using var expected = good.Values.to(ScalarType.Float32);
            Assert.True(TierTestBed.BitEqual(expected, good.Target.Data));
        }

        pool.Dispose();
        bed.AssertNothingLeft();
    }

    private static float Extreme(DeviceTensor tensor, bool max)
    {
        using var value = max ? tensor.Data.max() : tensor.Data.min();
        return value.item<float>();
    }

    // Random float16 values written to a disk tensor, and a float32 target for them on the GPU tier.
    private sealed class Float16OnDisk : IDisposable
    {
        public Float16OnDisk(TierTestBed bed, long[] shape, string name, int seed)
        {
            Values = TierTestBed.RandomTensor(shape, ScalarType.Float16, seed: seed);
            OnDisk = bed.Tiers.Disk.Allocate(shape, ScalarType.Float16, name);
            Target = bed.Tiers.Gpu.Allocate(shape, ScalarType.Float32, $"{name}@gpu");
            TierCopy.CopyFrom(OnDisk, null, Values);
        }

        public Tensor Values { get; }

        public DiskTensor OnDisk { get; }

        public DeviceTensor Target { get; }

        public void Dispose()
        {
            Values.Dispose();
            OnDisk.Dispose();
            Target.Dispose();
        }
    }

    // A pool that makes a buffer per rent, keeps the ones out and frees each as it comes back.
    private sealed class CountingPool(DeviceTier tier) : ITensorBufferPool, IDisposable
    {
        public List<DeviceTensor> Rented { get; } = [];

        public DeviceTensor Rent(IReadOnlyList<long> shape, ScalarType dtype)
        {
            var buffer = tier.Allocate(shape.ToArray(), dtype, "staged");
            Rented.Add(buffer);
            return buffer;
        }

        public void Return(TieredTensor? tensor)
        {
            Assert.True(tensor is DeviceTensor buffer && Rented.Remove(buffer), "given back what was not rented");
            tensor!.Dispose();
        }

        public void Dispose() => Rented.ForEach(buffer => buffer.Dispose());
    }
}
