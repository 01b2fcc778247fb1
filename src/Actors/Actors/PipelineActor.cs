namespace FlexGen.Actors.Actors;

using Akka.Actor;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Tiers;

/// <summary>
/// The common loop of the tier actors: run each <see cref="ExecuteTask"/> part on this actor's own pinned
/// thread, trace it, answer <see cref="TaskCompleted"/>. Parts of a cancelled run are answered with
/// <see cref="TaskSkipped"/> without running. A part that throws makes the actor fail with
/// <see cref="TierTaskException"/>; the coordinator (the parent) decides what happens (see
/// GenerationCoordinator.SupervisorStrategy). Tier actors hold no tensors between messages: every buffer
/// belongs to the run (the coordinator disposes it), so a restart loses nothing.
/// </summary>
public abstract class PipelineActor : UntypedActor
{
    protected PipelineActor(PipelineActorKind tier)
    {
        Tier = tier;
    }

    public PipelineActorKind Tier { get; }

    private StreamScope? _stream;

    /// <summary>
    /// Names the pinned thread and, with CUDA, makes a dedicated stream current on it (the copy and disk actors'
    /// transfers then overlap the compute actor's kernels). Without CUDA there is no stream and nothing to do.
    /// </summary>
    protected override void PreStart()
    {
        Thread.CurrentThread.Name ??= $"flexgen-{Tier.ActorName()}";
        if (Tier != PipelineActorKind.CpuCompute && CudaStreams.IsAvailable)
        {
            _stream = CudaStreams.UseDedicatedStream();
        }

        base.PreStart();
    }

    protected override void PostStop()
    {
        _stream?.Dispose();
        _stream = null;
        base.PostStop();
    }

    protected override void OnReceive(object message)
    {
        switch (message)
        {
            case ExecuteTask { Tier: var tier } work when tier == Tier:
                Run(work);
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void Run(ExecuteTask work)
    {
        if (work.Run.IsCancelled)
        {
            Sender.Tell(new TaskSkipped(work.Run, work.Task, Tier));
            return;
        }

        var trace = work.Run.Trace;
        var start = trace.Now;
        long bytes;
        try
        {
            bytes = work.Run.Execute(work.Task, Tier);
        }
        catch (Exception e)
        {
            throw new TierTaskException(work.Run, work.Task, Tier, e);
        }

        // The part's kernels or copies were queued on this actor's stream: they must have finished before another
        // actor (another stream) uses the data. A stream sync, never a device-wide one.
        _stream?.Stream?.Synchronize();
        trace.Record(Tier, work.Task, start, trace.Now, bytes);
        Sender.Tell(new TaskCompleted(work.Run, work.Task, Tier));
    }

    /// <summary>Props of the actor for <paramref name="tier"/> on its own pinned dispatcher.</summary>
    public static Props PropsFor(PipelineActorKind tier)
    {
        Props props = tier switch
        {
            PipelineActorKind.GpuCompute => Props.Create(() => new GpuComputeActor()),
            PipelineActorKind.CpuCompute => Props.Create(() => new CpuComputeActor()),
            PipelineActorKind.Copy => Props.Create(() => new CopyActor()),
            PipelineActorKind.DiskIo => Props.Create(() => new DiskIoActor()),
            _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
        };
        return props.WithDispatcher(FlexGenHocon.DispatcherOf(tier));
    }
}

/// <summary>Layer math on the GPU tier (emulated in CPU memory without CUDA); owns the compute stream's thread.</summary>
public sealed class GpuComputeActor : PipelineActor
{
    public GpuComputeActor()
        : base(PipelineActorKind.GpuCompute)
    {
    }
}

/// <summary>Decode attention over CPU-resident cache rows (cpu_cache_compute).</summary>
public sealed class CpuComputeActor : PipelineActor
{
    public CpuComputeActor()
        : base(PipelineActorKind.CpuCompute)
    {
    }
}

/// <summary>CPU &lt;-&gt; GPU copies: weights in, cache in/out, hidden in/out; owns the copy stream's thread.</summary>
public sealed class CopyActor : PipelineActor
{
    public CopyActor()
        : base(PipelineActorKind.Copy)
    {
    }
}

/// <summary>Disk reads and writes (weights, cache and activations homed on disk).</summary>
public sealed class DiskIoActor : PipelineActor
{
    public DiskIoActor()
        : base(PipelineActorKind.DiskIo)
    {
    }
}
