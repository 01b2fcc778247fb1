namespace FlexGen.Actors.Schedule;

/// <summary>The tier actors a task can run on.</summary>
public enum TierKind
{
    /// <summary>Layer math on the GPU tier (emulated in CPU memory without CUDA).</summary>
    GpuCompute,
    /// <summary>Decode attention over CPU-resident cache (cpu_cache_compute).</summary>
    CpuCompute,
    /// <summary>CPU &lt;-&gt; GPU copies.</summary>
    Copy,
    /// <summary>Disk &lt;-&gt; CPU/GPU reads and writes.</summary>
    DiskIo,
}

public static class TierKindExtensions
{
    public static bool IsCompute(this TierKind tier) => tier is TierKind.GpuCompute or TierKind.CpuCompute;

    public static bool IsIo(this TierKind tier) => tier is TierKind.Copy or TierKind.DiskIo;

    /// <summary>The actor name used for the tier (also the trace's thread name).</summary>
    public static string ActorName(this TierKind tier) => tier switch
    {
        TierKind.GpuCompute => "gpu-compute",
        TierKind.CpuCompute => "cpu-compute",
        TierKind.Copy => "copy",
        TierKind.DiskIo => "disk-io",
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };
}
