namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;
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

    public static readonly string[] AllTiers = [.. PlainTiers, "compressed-cpu", "compressed-disk", "compressed-mixed"];

    /// <summary>4 bits, groups of 4 along dim 2 (extent 5: two groups, the second padded), like the cache's dim 2.</summary>
    internal static readonly CompressionConfig TestCompression = new(4, 4, 2, false);

    public static TheoryData<string, string> CompressedPairs()
    {
        var data = new TheoryData<string, string>();
        foreach (var src in AllTiers)
        {
            foreach (var dst in AllTiers)
            {
                if (src.StartsWith("compressed") || dst.StartsWith("compressed"))
                {
                    data.Add(src, dst);
                }
            }
        }

        return data;
    }

    internal static MemoryTier TierNamed(TierTestBed bed, string name) => name switch
    {
        "compressed-cpu" => new CompressedTier(bed.Tiers.Cpu, TestCompression),
        "compressed-disk" => new CompressedTier(bed.Tiers.Disk, TestCompression),
        "compressed-mixed" => new CompressedTier(TierNamed(bed, "mixed"), TestCompression),
        "gpu" => bed.Tiers.Gpu,
        "cpu" => bed.Tiers.Cpu,
        "disk" => bed.Tiers.Disk,
        // dim 1 of 8: gpu 2, cpu 4, disk 2 (granularity 2, like n_head).
        "mixed" => bed.Tiers.CreateMixed(25, 50, 2),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(PlainPairs))]
    public void Copy_should_be_bit_identical_between_every_pair_of_tiers(string srcTier, string dstTier, bool directIo)
    {
        using var bed = new TierTestBed(directIo);
        var src = TierNamed(bed, srcTier);
        var dst = TierNamed(bed, dstTier);
        var seed = 0;
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.Float32, ScalarType.Byte })
        {
            foreach (var withRanges in new[] { false, true })
            {
                seed++;
                CheckCopy(src, dst, dtype, withRanges, seed);
            }
        }

        bed.AssertNothingLeft();
    }

    [Theory]
    [MemberData(nameof(CompressedPairs))]
    public void Copy_should_match_group_quantization_when_either_side_is_compressed(string srcTier, string dstTier)
    {
        using var bed = new TierTestBed();
        var src = TierNamed(bed, srcTier);
        var dst = TierNamed(bed, dstTier);
        var seed = 100;
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.Float32 })
        {
            foreach (var withRanges in new[] { false, true })
            {
                seed++;
                CheckCopy(src, dst, dtype, withRanges, seed);
            }
        }

        bed.AssertNothingLeft();
    }

    /// <summary>What a compressed tier returns for <paramref name="data"/>: FlexLLMGen's quantization round trip.</summary>
    private static Tensor Quantized(Tensor data)
    {
        using var compressed = GroupQuantizer.Compress(data, TestCompression);
        return GroupQuantizer.Decompress(compressed, data.dtype);
    }

    /// <summary>
    /// dst (zeros) [dstRanges] = src [srcRanges]; everything else of dst stays zero. Bit-identical, where a compressed tier
    /// is involved to the group quantization of the source (the ranges never cut a group along dim 2).
    /// </summary>
    internal static void CheckCopy(MemoryTier srcTier, MemoryTier dstTier, ScalarType dtype, bool withRanges, int seed)
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

        TierCopy.Copy(destination, dstRanges, source, srcRanges);

        var compressed = srcTier is CompressedTier || dstTier is CompressedTier;
        using var expected = zeros.clone();
        using var stored = compressed ? Quantized(data) : data.alias();
        if (withRanges)
        {
            using var from = stored[TensorIndex.Slice(1, 4), TensorIndex.Slice(1, 7)];
            using var to = expected[TensorIndex.Slice(2, 5), TensorIndex.Slice(2, 8)];
            to.copy_(from);
        }
        else
        {
            expected.copy_(stored);
        }

        using var actual = TierCopy.ToTorch(destination, null, CPU);
        Assert.True(TierTestBed.BitEqual(expected, actual), $"{srcTier.Name} -> {dstTier.Name}, {dtype}, ranges {withRanges}: data differs");
    }

    [Theory]
    [InlineData(false, 8 << 20)]
    [InlineData(true, 8 << 20)]
    [InlineData(true, 8192)]   // many chunks in parallel, straight into aligned memory or through bounce buffers
    [InlineData(false, 12288)]
    public void Disk_tier_should_round_trip_block_aligned_and_unaligned_pieces(bool directIo, int chunkBytes)
    {
        using var bed = new TierTestBed(directIo, chunkBytes: chunkBytes);
        RoundTripPieces(bed);
        bed.AssertNothingLeft();
    }

    private static void RoundTripPieces(TierTestBed bed)
    {
        long[] shape = [4, 64, 1024]; // float16: 128 KiB per row of dim 0
        using var data = TierTestBed.RandomTensor(shape, ScalarType.Float16, 7);
        using var onDisk = bed.Tiers.Disk.Allocate(shape, ScalarType.Float16, "big");
        TierCopy.CopyFrom(onDisk, null, data);

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
        TierCopy.CopyFrom(onDisk, [new(2, 3)], row);
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
    public void Compressed_tier_should_requantize_only_the_groups_a_box_cuts()
    {
        using var bed = new TierTestBed();
        PatchCompressed(bed);
        bed.AssertNothingLeft();
    }

    private static void PatchCompressed(TierTestBed bed)
    {
        var tier = new CompressedTier(bed.Tiers.Disk, TestCompression);
        using var generator = new Generator(5);
        using var before = rand([3, 4, 10], generator: generator);
        using var patch = rand([3, 2, 4], generator: generator);
        using var tensor = tier.Allocate([3, 4, 10], ScalarType.Float32, "patched");
        Assert.Equal(3 * 4 * 3 * 2 + 3 * 4 * 3 * 2 * 2, ((CompressedTensor)tensor).StoredBytes);
        TierCopy.CopyFrom(tensor, null, before);

        // Dim 2 range 3:7 cuts groups 0..3 and 4..7: both are decompressed, patched and compressed again.
        TierCopy.CopyFrom(tensor, [new(0, 3), new(1, 3), new(3, 7)], patch);
        using var after = TierCopy.ToTorch(tensor, null, CPU);
        using var expected = before.clone();
        using (var box = expected[.., 1..3, 3..7])
        {
            box.copy_(patch);
        }

        // Uniform [0, 1) data: one quantum is at most 1/15; two rounds of quantization stay within two.
        using var difference = after - expected;
        using var absolute = difference.abs();
        using var error = absolute.max();
        Assert.True(error.item<float>() <= 2.0f / 15 + 1e-3f, $"error {error.item<float>()}");
        using var onceQuantized = Quantized(before);
        using var untouchedBefore = onceQuantized[.., .., 8..];
        using var untouchedAfter = after[.., .., 8..];
        Assert.True(TierTestBed.BitEqual(untouchedBefore, untouchedAfter), "groups the box does not touch must keep their bytes");
    }

    [Theory]
    [InlineData(QuantizationArithmetic.Float16)]
    [InlineData(QuantizationArithmetic.Float32)]
    public void Compressed_tier_should_quantize_in_its_arithmetic(QuantizationArithmetic arithmetic)
    {
        using var bed = new TierTestBed();
        var tier = arithmetic == QuantizationArithmetic.Float16
            ? new CompressedTier(bed.Tiers.Cpu, TestCompression) // the default: the cache's float16
            : new CompressedTier(bed.Tiers.Cpu, TestCompression, arithmetic);
        Assert.Equal(arithmetic, tier.Arithmetic);
        using (var scope = NewDisposeScope())
        using (var generator = new Generator(11))
        using (var stored = (CompressedTensor)tier.Allocate([8, 16, 64], ScalarType.Float16, "weights"))
        {
            var data = randn([8, 16, 64], generator: generator).to(ScalarType.Float16);
            TierCopy.CopyFrom(stored, null, data);
            using var packed = TierCopy.ToTorch(stored.Packed, null, CPU);
            using var scales = TierCopy.ToTorch(stored.Scales, null, CPU);
            using var expected = GroupQuantizer.Compress(data, TestCompression, arithmetic);
            using var other = GroupQuantizer.Compress(data, TestCompression,
                arithmetic == QuantizationArithmetic.Float16 ? QuantizationArithmetic.Float32 : QuantizationArithmetic.Float16);
            Assert.True(TierTestBed.BitEqual(expected.Packed, packed) && TierTestBed.BitEqual(expected.Scale, scales), $"{arithmetic} tier bytes");
            Assert.False(TierTestBed.BitEqual(other.Packed, packed), "the two arithmetics should give different levels on this data");
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void Compressed_tier_should_refuse_integer_tensors_and_bad_settings()
    {
        using var bed = new TierTestBed();
        var tier = new CompressedTier(bed.Tiers.Cpu, TestCompression);
        var integer = Assert.Throws<ArgumentException>(() => tier.Allocate([4, 4, 4], ScalarType.Byte, "ids"));
        Assert.Contains("'ids'", integer.Message);
        Assert.Throws<ArgumentException>(() => new CompressedTier(bed.Tiers.CreateMixed(50, 50, 1), new CompressionConfig(4, 64, 0, false)));
        bed.AssertNothingLeft();
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
