namespace FlexGen.Tensors.Tiers;

/// <summary>The three memory tiers, in FlexGen's order of speed: where a tensor's bytes live and where the placement plan puts things.</summary>
public enum TierKind
{
    Gpu,
    Cpu,
    Disk,
}

/// <summary>Bytes held by each tier.</summary>
public readonly record struct TierBytes(long Gpu, long Cpu, long Disk)
{
    public static TierBytes Zero => default;

    public long Total => Gpu + Cpu + Disk;

    public long this[TierKind tier] => tier switch
    {
        TierKind.Gpu => Gpu,
        TierKind.Cpu => Cpu,
        TierKind.Disk => Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };

    /// <summary>All bytes on one tier.</summary>
    public static TierBytes On(TierKind tier, long bytes) => tier switch
    {
        TierKind.Gpu => new(bytes, 0, 0),
        TierKind.Cpu => new(0, bytes, 0),
        TierKind.Disk => new(0, 0, bytes),
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };

    public static TierBytes operator +(TierBytes a, TierBytes b) => new(a.Gpu + b.Gpu, a.Cpu + b.Cpu, a.Disk + b.Disk);

    public static TierBytes operator *(TierBytes a, long n) => new(a.Gpu * n, a.Cpu * n, a.Disk * n);

    public override string ToString() => $"gpu {Gpu:N0} B, cpu {Cpu:N0} B, disk {Disk:N0} B";
}

/// <summary>Bytes each tier may hold; null = unlimited.</summary>
public sealed record TierCapacities(long? GpuBytes = null, long? CpuBytes = null, long? DiskBytes = null)
{
    public static TierCapacities Unlimited { get; } = new();

    public long? this[TierKind tier] => tier switch
    {
        TierKind.Gpu => GpuBytes,
        TierKind.Cpu => CpuBytes,
        TierKind.Disk => DiskBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };
}
