namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Placement;

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

/// <summary>
/// The GPU, CPU and disk tiers of one engine, owned together (FlexGen's env: gpu, cpu, disk, mixed). Composite tiers
/// (mixed, compressed) are made over them on demand. Disposing deletes every offload file and stops disk I/O.
/// </summary>
public sealed class MemoryTiers : IDisposable
{
    private readonly DiskTier? _disk;

    /// <exception cref="OffloadDirectoryException">The offload directory is missing, not a directory or not writable.</exception>
    public MemoryTiers(TierSettings options)
    {
        Options = options;
        Gpu = DeviceTier.CreateGpu(options.GpuCapacityBytes, options.ForceEmulatedGpu);
        Cpu = DeviceTier.CreateCpu(options.CpuCapacityBytes, options.PinCpuMemory);
        _disk = options.OffloadDirectory is null ? null : new DiskTier(options.OffloadDirectory, options.Disk);
    }

    public TierSettings Options { get; }

    public DeviceTier Gpu { get; }

    public DeviceTier Cpu { get; }

    public bool HasDisk => _disk is not null;

    /// <exception cref="InvalidOperationException">No offload directory was configured.</exception>
    public DiskTier Disk => _disk ?? throw new InvalidOperationException("No disk tier: TierSettings.OffloadDirectory is not set.");

    /// <summary>The physical tier of a kind (Gpu, Cpu or Disk).</summary>
    public MemoryTier this[TierKind kind] => kind switch
    {
        TierKind.Gpu => Gpu,
        TierKind.Cpu => Cpu,
        TierKind.Disk => Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown memory tier"),
    };

    /// <summary>A mixed tier over these tiers, splitting dimension 1 by the percentages in multiples of <paramref name="granularity"/>.</summary>
    public MixedTier CreateMixed(double gpuPercent, double cpuPercent, int granularity) =>
        new(Gpu, Cpu, Disk, gpuPercent, cpuPercent, granularity);

    /// <summary>Stats of the GPU, CPU and (if any) disk tiers.</summary>
    public IReadOnlyList<TierStats> Stats =>
        _disk is null ? [Gpu.Stats, Cpu.Stats] : [Gpu.Stats, Cpu.Stats, _disk.Stats];

    /// <summary>Resets the peak of the GPU, CPU and disk tiers to what each holds now (<see cref="TierAccounting.ResetPeak"/>).</summary>
    public void ResetPeaks()
    {
        Gpu.Accounting.ResetPeak();
        Cpu.Accounting.ResetPeak();
        _disk?.Accounting.ResetPeak();
    }

    /// <summary>One line per tier, plus whether the GPU is emulated, O_DIRECT and CUDA streams, for logs.</summary>
    public string Describe()
    {
        var lines = Stats.Select(s => s.ToString()).ToList();
        lines.Add(Gpu.IsEmulated ? "gpu tier emulated in CPU memory (no CUDA)" : $"gpu tier on {Gpu.Device}");
        if (_disk is not null)
        {
            lines.Add($"disk tier in {_disk.Directory}, {(_disk.DirectIo ? "O_DIRECT" : "buffered")}{(_disk.DirectIoFellBack ? " (fell back to buffered)" : "")}, {_disk.IoPool.ThreadCount} I/O threads");
        }

        lines.Add(CudaStreams.Status);
        return string.Join(Environment.NewLine, lines);
    }

    public void Dispose()
    {
        _disk?.Dispose();
        Gpu.Dispose();
        Cpu.Dispose();
    }
}
