namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class TierCopyTests
{
    public static readonly string[] PlainTiers = ["gpu", "cpu", "disk", "mixed"];

    public static TheoryData<string, string, bool> PlainPairs()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var direct in new[] { false, true })
        {
            foreach (var src in PlainTiers)
            {
                foreach (var dst in PlainTiers)
                {
                    data.Add(src, dst, direct);
                }
            }
        }

        return data;
    }

    internal static MemoryTier TierNamed(TierTestBed bed, string name) => name switch
    {
        "gpu" => bed.Tiers.Gpu,
        "cpu" => bed.Tiers.Cpu,
        "disk" => bed.Tiers.Disk,
        // dim 1 of 8: gpu 2, cpu 4, disk 2 (granularity 2, like n_head).
        "mixed" => bed.Tiers.CreateMixed(25, 50, 2),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(PlainPairs))]
    public async Task Copy_should_be_bit_identical_between_every_pair_of_tiers(string srcTier, string dstTier, bool directIo)
    {
        using var bed = new TierTestBed(directIo);
        var src = TierNamed(bed, srcTier);
        var dst = TierNamed(bed, dstTier);
        var seed = 0;
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.Float32, ScalarType.Byte })
        {
            foreach (var withRanges in new[] { false, true })
            {
                var useAsync = (seed++ & 1) == 1;
                await CheckCopy(src, dst, dtype, withRanges, useAsync, seed);
            }
        }

        bed.AssertNothingLeft();
    }

    /// <summary>dst (zeros) [dstRanges] = src [srcRanges]; everything else of dst stays zero.</summary>
    internal static async Task CheckCopy(MemoryTier srcTier, MemoryTier dstTier, ScalarType dtype, bool withRanges, bool useAsync, int seed)
    {
        long[] shape = [6, 8, 5];
        IndexRange[]? srcRanges = withRanges ? [new(1, 4), new(1, 7), new(0, 5)] : null;
        IndexRange[]? dstRanges = withRanges ? [new(2, 5), new(2, 8), new(0, 5)] : null;

        using var data = TierTestBed.RandomTensor(shape, dtype, seed);
        using var zeros = torch.zeros(shape, dtype);
        using var source = srcTier.Allocate(shape, dtype, "source");
        using var destination = dstTier.Allocate(shape, dtype, "destination");
        TierCopy.CopyFrom(source, null, data);
        TierCopy.CopyFrom(destination, null, zeros);

        if (useAsync)
        {
            await TierCopy.CopyAsync(destination, dstRanges, source, srcRanges);
        }
        else
        {
            TierCopy.Copy(destination, dstRanges, source, srcRanges);
        }

        using var expected = zeros.clone();
        if (withRanges)
        {
            using var from = data[TensorIndex.Slice(1, 4), TensorIndex.Slice(1, 7)];
            using var to = expected[TensorIndex.Slice(2, 5), TensorIndex.Slice(2, 8)];
            to.copy_(from);
        }
        else
        {
            expected.copy_(data);
        }

        using var actual = TierCopy.ToTorch(destination, null, CPU);
        Assert.True(TierTestBed.BitEqual(expected, actual), $"{srcTier.Name} -> {dstTier.Name}, {dtype}, ranges {withRanges}, async {useAsync}: data differs");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Disk_tier_should_round_trip_block_aligned_and_unaligned_pieces(bool directIo)
    {
        using var bed = new TierTestBed(directIo);
        await RoundTripPieces(bed);
        bed.AssertNothingLeft();
    }

    private static async Task RoundTripPieces(TierTestBed bed)
    {
        long[] shape = [4, 64, 1024]; // float16: 128 KiB per row of dim 0
        using var data = TierTestBed.RandomTensor(shape, ScalarType.Float16, 7);
        using var onDisk = bed.Tiers.Disk.Allocate(shape, ScalarType.Float16, "big");
        await TierCopy.CopyFromAsync(onDisk, null, data);

        // Aligned rows, an unaligned box, and a box that ends at the file's end.
        IndexRange[][] boxes =
        [
            [new(1, 3)],
            [new(0, 4), new(3, 60), new(5, 1000)],
            [new(3, 4), new(63, 64), new(1, 1024)],
        ];
        foreach (var box in boxes)
        {
            using var part = TierCopy.ToTorch(onDisk, box, CPU);
            using var expected = data.index(box.Select(r => TensorIndex.Slice(r.Start, r.Stop)).ToArray());
            Assert.True(TierTestBed.BitEqual(expected, part), $"read of [{string.Join(", ", box)}]");
        }

        // Overwrite an unaligned box and an aligned row, then read everything back.
        using var patch = TierTestBed.RandomTensor([4, 57, 995], ScalarType.Float16, 8);
        TierCopy.CopyFrom(onDisk, [new(0, 4), new(3, 60), new(5, 1000)], patch);
        using var row = TierTestBed.RandomTensor([1, 64, 1024], ScalarType.Float16, 9);
        await TierCopy.CopyFromAsync(onDisk, [new(2, 3)], row);
        using (var view = data[.., 3..60, 5..1000])
        {
            view.copy_(patch);
        }

        using (var view = data[2..3])
        {
            view.copy_(row);
        }

        using var all = TierCopy.ToTorch(onDisk, null, CPU);
        Assert.True(TierTestBed.BitEqual(data, all));
        Assert.False(bed.Tiers.Disk.DirectIoFellBack);
    }

    [Fact]
    public void Copy_should_reject_mismatched_extents_and_element_types()
    {
        using var bed = new TierTestBed();
        using var a = bed.Tiers.Cpu.Allocate([4, 4], ScalarType.Float16, "a");
        using var b = bed.Tiers.Disk.Allocate([4, 4], ScalarType.Float32, "b");
        using var c = bed.Tiers.Disk.Allocate([4, 4], ScalarType.Float16, "c");
        var extents = Assert.Throws<ArgumentException>(() => TierCopy.Copy(c, [new(0, 2)], a, [new(0, 3)]));
        Assert.Contains("extents differ", extents.Message);
        var types = Assert.Throws<ArgumentException>(() => TierCopy.Copy(b, a));
        Assert.Contains("element types differ", types.Message);
        var outside = Assert.Throws<ArgumentOutOfRangeException>(() => TierCopy.Copy(c, [new(2, 6)], a, [new(0, 4)]));
        Assert.Contains("'c'", outside.Message);
    }

    [Fact]
    public void Mixed_tier_should_split_dim1_in_multiples_of_the_granularity()
    {
        using var bed = new TierTestBed();
        var mixed = bed.Tiers.CreateMixed(30, 30, 4);
        using var cache = mixed.Allocate([10, 32, 16], ScalarType.Float16, "cache");
        // floor(32 * 0.3) = 9 -> 8 on gpu, 8 on cpu, the rest (16) on disk.
        Assert.Equal(8, cache.SegmentLength(TierKind.Gpu));
        Assert.Equal(8, cache.SegmentLength(TierKind.Cpu));
        Assert.Equal(16, cache.SegmentLength(TierKind.Disk));
        Assert.Equal(10 * 8 * 16 * 2, bed.Tiers.Gpu.Stats.CurrentBytes);
        Assert.Equal(10 * 16 * 16 * 2, bed.Tiers.Disk.Stats.CurrentBytes);
        Assert.Single(bed.OffloadFiles);
        cache.Dispose();
        bed.AssertNothingLeft();
    }
}
