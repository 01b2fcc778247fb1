namespace FlexGen.Tensors.Tiers;

using System.Globalization;
using System.Runtime.InteropServices;

/// <summary>The bytes a tier may use for a run and where that number came from (a flag, /proc/meminfo, ...).</summary>
/// <param name="Bytes">The budget.</param>
/// <param name="Source">Where it came from, for messages: e.g. "MemAvailable of /proc/meminfo", "--cpu-mem".</param>
public sealed record TierBudget(long Bytes, string Source)
{
    public override string ToString() => $"{Bytes:N0} bytes ({TierBudgets.Gib(Bytes)}, {Source})";
}

/// <summary>
/// The memory a run may use on each tier (the design brief's "every tier has a budget"): GPU memory from the device
/// (CUDA), CPU memory from the machine's available memory, disk from the offload folder's free space; an override
/// replaces a detected number. A null budget is unlimited. Without CUDA the GPU tier is emulated in CPU memory
/// (<see cref="GpuInCpuMemory"/>): its bytes count against the CPU budget too. <see cref="Placement.PlacementPlan"/>
/// checks a run's <see cref="Placement.MemoryNeed"/> against these before anything is allocated.
/// </summary>
public sealed record TierBudgets
{
    /// <summary>Bytes per GB in the budget flags and options (GiB: 2^30, as FlexGen's cost model counts).</summary>
    public const long BytesPerGb = 1L << 30;

    /// <summary>No budget on any tier (nothing is refused for its size).</summary>
    public static TierBudgets Unlimited { get; } = new();

    public TierBudget? Gpu { get; init; }

    public TierBudget? Cpu { get; init; }

    public TierBudget? Disk { get; init; }

    /// <summary>The GPU tier lives in CPU memory (no CUDA, or emulated on purpose): its bytes count against <see cref="Cpu"/> too.</summary>
    public bool GpuInCpuMemory { get; init; }

    public TierBudget? this[TierKind tier] => tier switch
    {
        TierKind.Gpu => Gpu,
        TierKind.Cpu => Cpu,
        TierKind.Disk => Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };

    /// <summary>
    /// The budgets of this machine: GPU from the CUDA device's free memory (when <paramref name="cuda"/>), CPU from
    /// MemAvailable of /proc/meminfo, disk from the free space of the file system holding <paramref name="offloadDirectory"/>
    /// (or its nearest existing parent); each replaced by <paramref name="overrides"/> where it gives a number. Without CUDA
    /// the GPU tier has no budget of its own unless overridden: it counts against the CPU budget.
    /// </summary>
    /// <param name="overrides">Budgets given by the user (--gpu-mem, --cpu-mem, --disk-mem, or the hosting options).</param>
    /// <param name="overrideNames">How each override is named in messages, in GPU, CPU, disk order (default: "set by the caller").</param>
    public static TierBudgets Detect(string? offloadDirectory, bool cuda, TierCapacities? overrides = null,
        (string Gpu, string Cpu, string Disk)? overrideNames = null)
    {
        var names = overrideNames ?? ("set by the caller", "set by the caller", "set by the caller");
        return new TierBudgets
        {
            Gpu = Pick(overrides?.GpuBytes, names.Gpu, () => cuda ? CudaFreeMemory() : null),
            Cpu = Pick(overrides?.CpuBytes, names.Cpu, AvailableMemory),
            Disk = Pick(overrides?.DiskBytes, names.Disk, () => offloadDirectory is null ? null : FreeDiskSpace(offloadDirectory)),
            GpuInCpuMemory = !cuda,
        };
    }

    /// <summary>Bytes of <paramref name="gb"/> GB (2^30 bytes each, see <see cref="BytesPerGb"/>); null when not a positive finite size.</summary>
    public static long? BytesOfGb(double gb) =>
        double.IsFinite(gb) && gb > 0 && gb * BytesPerGb < long.MaxValue ? Math.Max(1, (long)(gb * BytesPerGb)) : null;

    /// <summary>"12.35 GiB".</summary>
    public static string Gib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)BytesPerGb:F2} GiB");

    private static TierBudget? Pick(long? given, string name, Func<TierBudget?> detect) =>
        given is { } bytes ? new TierBudget(bytes, name) : detect();

    /// <summary>MemAvailable of /proc/meminfo; elsewhere the memory .NET sees as available.</summary>
    public static TierBudget? AvailableMemory()
    {
        foreach (var line in KernelFile.Read("/proc/meminfo")?.Split('\n') ?? [])
        {
            // "MemAvailable:   23844656 kB"
            if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 2 && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                return new TierBudget(kb * 1024, "MemAvailable of /proc/meminfo");
        }

        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return total > 0 ? new TierBudget(total, "memory available to .NET") : null;
    }

    /// <summary>Free bytes of the file system holding <paramref name="directory"/> (or its nearest existing parent).</summary>
    public static TierBudget? FreeDiskSpace(string directory)
    {
        try
        {
            for (string? dir = Path.GetFullPath(directory); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
            {
                if (!Directory.Exists(dir)) continue;
                return new TierBudget(new DriveInfo(dir).AvailableFreeSpace, $"free space at {dir}");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
        }

        return null;
    }

    /// <summary>Free memory of the current CUDA device (driver API, the primary context libtorch uses); null when it cannot be asked.</summary>
    public static TierBudget? CudaFreeMemory()
    {
        try
        {
            if (CudaDriver.cuInit(0) != 0 || CudaDriver.cuDeviceGet(out int device, 0) != 0) return null;
            if (CudaDriver.cuDevicePrimaryCtxRetain(out nint context, device) != 0) return null;
            try
            {
                if (CudaDriver.cuCtxPushCurrent_v2(context) != 0) return null;
                try
                {
                    return CudaDriver.cuMemGetInfo_v2(out nuint free, out _) == 0
                        ? new TierBudget((long)free, "free memory of CUDA device 0")
                        : null;
                }
                finally
                {
                    CudaDriver.cuCtxPopCurrent_v2(out _);
                }
            }
            finally
            {
                CudaDriver.cuDevicePrimaryCtxRelease_v2(device);
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    public override string ToString() =>
        $"gpu {Gpu?.ToString() ?? "unlimited"}{(GpuInCpuMemory ? " (in CPU memory)" : "")}, cpu {Cpu?.ToString() ?? "unlimited"}, disk {Disk?.ToString() ?? "unlimited"}";
}

/// <summary>The CUDA driver calls <see cref="TierBudgets.CudaFreeMemory"/> makes.</summary>
internal static partial class CudaDriver
{
    private const string Library = "libcuda.so.1";

    [LibraryImport(Library)]
    internal static partial int cuInit(uint flags);

    [LibraryImport(Library)]
    internal static partial int cuDeviceGet(out int device, int ordinal);

    [LibraryImport(Library)]
    internal static partial int cuDevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport(Library)]
    internal static partial int cuDevicePrimaryCtxRelease_v2(int device);

    [LibraryImport(Library)]
    internal static partial int cuCtxPushCurrent_v2(nint context);

    [LibraryImport(Library)]
    internal static partial int cuCtxPopCurrent_v2(out nint context);

    [LibraryImport(Library)]
    internal static partial int cuMemGetInfo_v2(out nuint free, out nuint total);
}
