namespace FlexGen.Actors.Schedule;

/// <summary>The tier actors a task can run on.</summary>
public enum PipelineActorKind
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

public static class PipelineActorKindExtensions
{
    public static bool IsCompute(this PipelineActorKind tier) => tier is PipelineActorKind.GpuCompute or PipelineActorKind.CpuCompute;

    public static bool IsIo(this PipelineActorKind tier) => tier is PipelineActorKind.Copy or PipelineActorKind.DiskIo;

    /// <summary>The actor name used for the tier (also the trace's thread name).</summary>
    public static string ActorName(this PipelineActorKind tier) => tier switch
    {
        PipelineActorKind.GpuCompute => "gpu-compute",
        PipelineActorKind.CpuCompute => "cpu-compute",
        PipelineActorKind.Copy => "copy",
        PipelineActorKind.DiskIo => "disk-io",
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };
}
