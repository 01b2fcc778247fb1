namespace FlexGen.Tensors.Tiers;

/// <summary>Budgets and switches of the tiers of one engine.</summary>
public sealed record TierSettings
{
    /// <summary>
    /// Options whose budgets are the plan's <paramref name="capacities"/> (null: unbounded) and whose CPU memory is pinned
    /// as the policy's <c>pin_weight</c> asks.
    /// </summary>
    public static TierSettings For(TierCapacities capacities, string? offloadDirectory, bool pinCpuMemory = false, DiskTierSettings? disk = null) => new()
    {
        GpuCapacityBytes = capacities.GpuBytes ?? long.MaxValue,
        CpuCapacityBytes = capacities.CpuBytes ?? long.MaxValue,
        OffloadDirectory = offloadDirectory,
        PinCpuMemory = pinCpuMemory,
        Disk = (disk ?? new DiskTierSettings()) with { CapacityBytes = capacities.DiskBytes ?? long.MaxValue },
    };

    /// <summary>Capacity of the GPU tier (the emulated one, without CUDA, has exactly this budget).</summary>
    public long GpuCapacityBytes { get; init; } = long.MaxValue;

    public long CpuCapacityBytes { get; init; } = long.MaxValue;

    /// <summary>Where the disk tier keeps its files; null: no disk tier (asking for it throws).</summary>
    public string? OffloadDirectory { get; init; }

    public DiskTierSettings Disk { get; init; } = new();

    /// <summary>Pin CPU-tier memory (only effective with CUDA; FlexGen's <c>pin_weight</c>).</summary>
    public bool PinCpuMemory { get; init; }

    /// <summary>Emulate the GPU in CPU memory even when CUDA is present (tests, comparisons).</summary>
    public bool ForceEmulatedGpu { get; init; }
}

/// <summary>Settings of the disk tier.</summary>
/// <param name="DirectIo">Bypass the page cache with O_DIRECT (aligned bounce buffers; unaligned pieces go buffered).</param>
/// <param name="IoThreads">Threads of the tier's I/O pool, which runs the chunks of large transfers next to the calling thread.</param>
/// <param name="CapacityBytes">Budget for the bytes of all live disk tensors.</param>
public sealed record DiskTierSettings(bool DirectIo = false, int IoThreads = 4, long CapacityBytes = long.MaxValue)
{
    /// <summary>Bytes per read/write call; a large transfer is cut into chunks of this size (a multiple of 4 KiB).</summary>
    public int ChunkBytes { get; init; } = 8 << 20;

    /// <summary>Chunks of one large transfer in flight at once (queue depth for the device).</summary>
    public int ParallelChunks { get; init; } = 4;

    /// <summary>
    /// Reserve each file's blocks when the tensor is allocated (fallocate): a full disk is reported by
    /// <see cref="DiskTier.Allocate"/> instead of by a write later on, and writes skip block allocation.
    /// </summary>
    public bool Preallocate { get; init; } = true;
}
