namespace FlexGen.Actors.Pipeline;

using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Tiers;

/// <summary>
/// The queue a pipeline actor's parts put their kernels and copies on. Created on the actor's own thread when it
/// starts and disposed when it stops. The actor waits for it after each part, before the run releases what the part
/// used last, and before it answers a failed part (nothing the part queued is still running then).
/// </summary>
public interface IPartStream : IDisposable
{
    /// <summary>Blocks until everything queued on this stream has finished (a stream sync, never a device-wide one).</summary>
    void Synchronize();
}

/// <summary>Makes the part stream of a pipeline actor on its thread; null: the actor's work runs synchronously (no stream).</summary>
public delegate IPartStream? PartStreamFactory(PipelineActorKind actor);

/// <summary>A dedicated CUDA stream made current on the actor's thread (<see cref="CudaStreams.UseDedicatedStream"/>).</summary>
public sealed class CudaPartStream : IPartStream
{
    private readonly StreamScope _scope;

    private CudaPartStream(StreamScope scope) => _scope = scope;

    /// <summary>
    /// The default factory: a dedicated stream for every actor that queues GPU work (all but cpu-compute) when CUDA is
    /// available; without CUDA none (the emulated GPU tier computes synchronously).
    /// </summary>
    public static IPartStream? For(PipelineActorKind actor) =>
        actor != PipelineActorKind.CpuCompute && CudaStreams.IsAvailable ? new CudaPartStream(CudaStreams.UseDedicatedStream()) : null;

    public void Synchronize() => _scope.Stream?.Synchronize();

    public void Dispose() => _scope.Dispose();
}
