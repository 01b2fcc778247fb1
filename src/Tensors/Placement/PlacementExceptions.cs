namespace FlexGen.Tensors.Placement;

using FlexGen.Tensors.Tiers;

/// <summary>A policy that cannot be placed for this model and batch geometry (the message says which rule).</summary>
public class PlacementException : InvalidOperationException
{
    public PlacementException(string message) : base(message)
    {
    }
}

/// <summary>
/// A placement that needs more bytes on a tier than the tier's configured capacity (homes), or a run that needs more
/// than the tier's budget (homes and working buffers, <see cref="MemoryNeed"/>): refused before anything is allocated.
/// A front end reports it as a usage error: the user asked for more than the machine has.
/// </summary>
public sealed class TierCapacityExceededException : PlacementException
{
    /// <summary>A run over a tier's budget: "The Cpu tier needs N bytes (x GiB: breakdown) but its budget is B bytes (y GiB, source)."</summary>
    /// <param name="withEmulatedGpu">The need includes the GPU tier's, emulated in CPU memory (said in the message).</param>
    public TierCapacityExceededException(TierKind tier, long neededBytes, TierBudget budget, MemoryNeed need, string breakdown, bool withEmulatedGpu = false)
        : base($"The {tier} tier{(withEmulatedGpu ? " (with the Gpu tier, emulated in CPU memory)" : "")} needs {neededBytes:N0} bytes " +
            $"({TierBudgets.Gib(neededBytes)}: {breakdown}) but its budget is {budget}.")
    {
        ArgumentNullException.ThrowIfNull(budget);
        Tier = tier;
        NeededBytes = neededBytes;
        CapacityBytes = budget.Bytes;
        BudgetSource = budget.Source;
        Need = need;
    }

    public TierCapacityExceededException(TierKind tier, long neededBytes, long capacityBytes, string breakdown)
        : base($"The {tier} tier needs {neededBytes:N0} bytes ({breakdown}) but its capacity is {capacityBytes:N0} bytes.")
    {
        Tier = tier;
        NeededBytes = neededBytes;
        CapacityBytes = capacityBytes;
    }

    public TierKind Tier { get; }

    public long NeededBytes { get; }

    /// <summary>The capacity or budget.</summary>
    public long CapacityBytes { get; }

    /// <summary>Where the budget came from (null for a capacity).</summary>
    public string? BudgetSource { get; }

    /// <summary>The run's need on every tier (null for a capacity).</summary>
    public MemoryNeed? Need { get; }
}
