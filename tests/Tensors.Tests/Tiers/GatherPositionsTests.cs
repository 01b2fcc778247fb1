namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class GatherPositionsTests
{
    [Theory]
    [InlineData("gpu", false)]
    [InlineData("cpu", false)]
    [InlineData("disk", false)]
    [InlineData("disk", true)]
    [InlineData("mixed", false)]
    public void Gather_should_return_the_chosen_position_of_every_row(string tier, bool directIo)
    {
        using var bed = new TierTestBed(directIo);
        long[] shape = [7, 8, 5]; // (seq, rows, d)
        using (var data = TierTestBed.RandomTensor(shape, ScalarType.Float16, 11))
        using (var home = TierCopyTests.TierNamed(bed, tier).Allocate(shape, ScalarType.Float16, "values"))
        {
            TierCopy.CopyFrom(home, null, data);
            // (k = 3, rows = 8): row r picks positions, some repeated, some adjacent across rows.
            using var positions = torch.tensor(new long[]
            {
                0, 6, 3, 3, 1, 2, 5, 4,
                6, 0, 3, 4, 1, 1, 0, 4,
                2, 2, 2, 2, 2, 2, 2, 2,
            }, [3, 8], ScalarType.Int64);
            using var expected = Expected(data, positions); // (3, 8, 5)
            using var gathered = TierCopy.GatherPositions(home, positions, CPU); // outside any dispose scope: leaks would show
            Assert.Equal([3L, 8, 5], gathered.shape);
            Assert.True(Same(expected, gathered), $"{tier}: gathered rows differ from data[positions, r]");
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void Gather_should_read_a_row_major_cache_home_as_flexgens_order()
    {
        using var bed = new TierTestBed();
        long[] shape = [7, 8, 5]; // (seq, rows, d), stored row by row
        using (var data = TierTestBed.RandomTensor(shape, ScalarType.Float32, 13))
        using (var home = bed.Tiers.Cpu.AllocateRowMajorCache(shape, ScalarType.Float32, "values"))
        using (var positions = torch.tensor(new long[] { 0, 6, 3, 3, 1, 2, 5, 4, 6, 0, 3, 4, 1, 1, 0, 4 }, [2, 8], ScalarType.Int64))
        {
            Assert.False(home.Data.is_contiguous());
            TierCopy.CopyFrom(home, null, data);
            using var expected = Expected(data, positions);
            var leaked = FlexGen.Tensors.Diagnostics.LiveTensors.LeakedBy(() =>
            {
                using var gathered = TierCopy.GatherPositions(home, positions, CPU);
                Assert.True(Same(expected, gathered), "gathered rows differ from data[positions, r]");
            });
            Assert.Equal(0L, leaked);
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void A_row_major_cache_home_should_be_refused_off_three_dims()
    {
        using var bed = new TierTestBed();
        var error = Assert.Throws<ArgumentException>(() => bed.Tiers.Cpu.AllocateRowMajorCache([7, 8], ScalarType.Float32, "values"));
        Assert.Contains("3-D", error.Message);
        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData("mixed")]
    [InlineData("disk")]
    [InlineData("cpu")]
    public void Gather_should_leave_no_tensor_behind_but_its_result(string tier)
    {
        using var bed = new TierTestBed();
        long[] shape = [7, 8, 5];
        using (var data = TierTestBed.RandomTensor(shape, ScalarType.Float16, 12))
        using (var home = TierCopyTests.TierNamed(bed, tier).Allocate(shape, ScalarType.Float16, "values"))
        using (var positions = torch.tensor(new long[] { 0, 6, 3, 3, 1, 2, 5, 4 }, [1, 8], ScalarType.Int64))
        {
            TierCopy.CopyFrom(home, null, data);
            // Counted without a garbage collection in between: a forgotten per-segment part would show here.
            var leaked = FlexGen.Tensors.Diagnostics.LiveTensors.LeakedBy(() =>
            {
                using var gathered = TierCopy.GatherPositions(home, positions, CPU);
            });
            Assert.Equal(0L, leaked);
        }

        bed.AssertNothingLeft();
    }

    private static bool Same(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.eq(b).all().item<bool>();
    }

    /// <summary>data[positions[j, r], r, :] by plain indexing.</summary>
    private static Tensor Expected(Tensor data, Tensor positions)
    {
        using var scope = NewDisposeScope();
        var rowIndex = torch.arange(positions.shape[1], ScalarType.Int64).view(1, -1).expand(positions.shape[0], -1);
        return data.index([TensorIndex.Tensor(positions), TensorIndex.Tensor(rowIndex)]).MoveToOuterDisposeScope();
    }

    [Fact]
    public void Gather_should_reject_positions_outside_the_tensor_and_compressed_tensors()
    {
        using var bed = new TierTestBed();
        using (var home = bed.Tiers.Cpu.Allocate([4, 2, 3], ScalarType.Float16, "values"))
        using (var compressedTier = new CompressedTier(bed.Tiers.Cpu, TierCopyTests.TestCompression))
        using (var compressed = compressedTier.Allocate([4, 2, 4], ScalarType.Float16, "packed"))
        using (var outside = torch.tensor(new long[] { 0, 4 }, [1, 2], ScalarType.Int64))
        using (var inside = torch.tensor(new long[] { 0, 1 }, [1, 2], ScalarType.Int64))
        using (var wrongRows = torch.tensor(new long[] { 0, 1, 2 }, [1, 3], ScalarType.Int64))
        {
            var error = Assert.Throws<ArgumentOutOfRangeException>(() => TierCopy.GatherPositions(home, outside, CPU));
            Assert.Contains("values", error.Message);
            Assert.Throws<ArgumentException>(() => TierCopy.GatherPositions(home, wrongRows, CPU));
            var notSupported = Assert.Throws<NotSupportedException>(() => TierCopy.GatherPositions(compressed, inside, CPU));
            Assert.Contains("packed", notSupported.Message);
        }

        bed.AssertNothingLeft();
    }
}
