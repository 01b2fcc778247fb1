namespace FlexGen.Tensors.Tiers;

/// <summary>A point-in-time view of one tier's accounting, for logs, benchmarks and tests.</summary>
/// <param name="Tier">The tier's name ("gpu", "cpu", "disk", ...).</param>
/// <param name="CurrentBytes">Bytes held by live tensors now.</param>
/// <param name="PeakBytes">Most bytes held at once since the tier was created or its peak was last reset.</param>
/// <param name="LiveTensors">Tensors allocated and not yet freed.</param>
/// <param name="TotalAllocations">Tensors allocated since the tier was created.</param>
/// <param name="CapacityBytes">The budget (<see cref="long.MaxValue"/> when unbounded).</param>
public sealed record TierStats(string Tier, long CurrentBytes, long PeakBytes, int LiveTensors, long TotalAllocations, long CapacityBytes)
{
    public override string ToString() =>
        $"{Tier}: {CurrentBytes:N0} B in {LiveTensors} tensors (peak {PeakBytes:N0} B, {TotalAllocations} allocations, capacity {(CapacityBytes == long.MaxValue ? "unbounded" : CapacityBytes.ToString("N0") + " B")})";
}

/// <summary>
/// Thread-safe byte and tensor counters of one tier with a capacity budget: <see cref="Reserve"/> before the
/// memory exists, <see cref="Release"/> when it is freed.
/// </summary>
public sealed class TierAccounting
{
    private readonly object _gate = new();
    private long _current;
    private long _peak;
    private int _live;
    private long _total;

    public TierAccounting(string tier, long capacityBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacityBytes);
        Tier = tier;
        CapacityBytes = capacityBytes;
    }

    public string Tier { get; }

    public long CapacityBytes { get; }

    /// <summary>Books <paramref name="bytes"/> for one tensor, or throws when the budget would be exceeded.</summary>
    /// <exception cref="TierBudgetExceededException">The tier's capacity would be exceeded.</exception>
    public void Reserve(long bytes, string? tensorName)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_gate)
        {
            if (bytes > CapacityBytes - _current)
            {
                throw new TierBudgetExceededException(Tier, tensorName, bytes, _current, CapacityBytes);
            }

            _current += bytes;
            _live++;
            _total++;
            _peak = Math.Max(_peak, _current);
        }
    }

    /// <summary>Returns what one <see cref="Reserve"/> booked.</summary>
    public void Release(long bytes)
    {
        lock (_gate)
        {
            _current -= bytes;
            _live--;
        }
    }

    /// <summary>
    /// Starts a new peak window: the peak becomes the bytes held now (tensors still alive, e.g. resident weights, stay
    /// in it), so later peaks measure one piece of work, such as a request.
    /// </summary>
    public void ResetPeak()
    {
        lock (_gate)
        {
            _peak = _current;
        }
    }

    public TierStats Snapshot()
    {
        lock (_gate)
        {
            return new TierStats(Tier, _current, _peak, _live, _total, CapacityBytes);
        }
    }
}
