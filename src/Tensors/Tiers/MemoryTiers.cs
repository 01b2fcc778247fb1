namespace FlexGen.Tensors.Tiers;


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
