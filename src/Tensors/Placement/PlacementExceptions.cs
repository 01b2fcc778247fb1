namespace FlexGen.Tensors.Placement;

using FlexGen.Tensors.Tiers;

/// <summary>A policy that cannot be placed for this model and batch geometry (the message says which rule).</summary>
public class PlacementException : InvalidOperationException
{
    public PlacementException(string message) : base(message)
    {
    }
}

/// <summary>A placement that needs more bytes on a tier than the tier's configured capacity.</summary>
public sealed class TierCapacityExceededException : PlacementException
{
    public TierCapacityExceededException(TierKind tier, long neededBytes, long capacityBytes, string breakdown)
        : base($"The {tier} tier needs {neededBytes:N0} bytes ({breakdown}) but its capacity is {capacityBytes:N0} bytes.")
    {
        Tier = tier;
        NeededBytes = neededBytes;
        CapacityBytes = capacityBytes;
    }

    public TierKind Tier { get; }

    public long NeededBytes { get; }

    public long CapacityBytes { get; }
}
