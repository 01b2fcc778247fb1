namespace FlexGen.Actors.Schedule;

/// <summary>The tier actors a task can run on.</summary>
public enum TierActorKind
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
    public static bool IsCompute(this TierActorKind tier) => tier is TierActorKind.GpuCompute or TierActorKind.CpuCompute;

    public static bool IsIo(this TierActorKind tier) => tier is TierActorKind.Copy or TierActorKind.DiskIo;

    /// <summary>The actor name used for the tier (also the trace's thread name).</summary>
    public static string ActorName(this TierActorKind tier) => tier switch
    {
        TierActorKind.GpuCompute => "gpu-compute",
        TierActorKind.CpuCompute => "cpu-compute",
        TierActorKind.Copy => "copy",
        TierActorKind.DiskIo => "disk-io",
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };
}
