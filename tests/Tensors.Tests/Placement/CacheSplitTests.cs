namespace FlexGen.Tensors.Tests.Placement;

using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Tiers;

public class CacheSplitTests
{
    [Theory]
    [InlineData(48, 25, 25, 4, 12, 12, 24)] // disk share: it takes the rest
    [InlineData(48, 30, 30, 4, 12, 12, 24)] // 14.4 rounds down to 12 on each
    [InlineData(50, 50, 50, 4, 24, 26, 0)]  // no disk share: cpu takes the rest (FlexGen), never a 0% disk segment
    [InlineData(48, 0, 100, 4, 0, 48, 0)]
    public void Mixed_tier_and_plan_should_split_dimension_one_the_same_FlexGen_way(
        long extent, double gpuPercent, double cpuPercent, int granularity, long gpu, long cpu, long disk)
    {
        Assert.Equal((gpu, cpu, disk), CachePlacement.SplitSegments(extent, gpuPercent, cpuPercent, granularity));
        Assert.Equal((gpu, cpu, disk), MixedTier.SplitLengths(extent, gpuPercent, cpuPercent, granularity));
    }
}
