namespace FlexGen.Tensors.Tiers;

using PlacementTier = FlexGen.Tensors.Placement.TierKind;

/// <summary>Maps the placement plan's homes onto the tiers of a <see cref="MemoryTiers"/>.</summary>
public static class TierHomes
{
    /// <summary>The physical tier for a placement home.</summary>
    public static MemoryTier For(this MemoryTiers tiers, PlacementTier home) => home switch
    {
        PlacementTier.Gpu => tiers.Gpu,
        PlacementTier.Cpu => tiers.Cpu,
        PlacementTier.Disk => tiers.Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(home), home, "Unknown placement tier."),
    };
}
