namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;

public class TierAccountingTests
{
    [Fact]
    public void Reset_peak_should_start_a_new_window_from_the_bytes_held_now()
    {
        var accounting = new TierAccounting("test", 1000);
        accounting.Reserve(100, "resident");
        accounting.Reserve(400, "temporary");
        accounting.Release(400);
        Assert.Equal(500, accounting.Snapshot().PeakBytes);

        accounting.ResetPeak();
        Assert.Equal(100, accounting.Snapshot().PeakBytes); // what is still held counts
        accounting.Reserve(50, "next");
        Assert.Equal(150, accounting.Snapshot().PeakBytes);
    }
}
