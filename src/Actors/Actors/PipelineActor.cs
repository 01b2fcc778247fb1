namespace FlexGen.Actors.Actors;

using Akka.Actor;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
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
    private readonly RunRegistry _runs;

    protected PipelineActor(PipelineActorKind tier, RunRegistry runs)
    {
        Tier = tier;
        _runs = runs;
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
            case ExecuteTask { Actor: var actor } work when actor == Tier:
                Run(work);
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void Run(ExecuteTask work)
    {
        if (!_runs.TryGet(work.Run, out var run) || run.IsCancelled)
        {
            Sender.Tell(new TaskSkipped(work.Run, work.Task, Tier));
            return;
        }

        var trace = run.Trace;
        var start = trace.Now;
        PartResult result;
        try
        {
            result = run.Execute(work.Task, Tier);

            // The part's kernels or copies were queued on this actor's stream: they must have finished before another
            // actor (another stream) uses the data, and before the run frees what the part used last. A stream sync,
            // never a device-wide one.
            _stream?.Stream?.Synchronize();
            run.Release(work.Task, Tier);
        }
        catch (Exception e)
        {
            throw new TierTaskException(work.Run, work.Task, Tier, e);
        }

        trace.Record(Tier, work.Task, start, trace.Now, result.Bytes);
        Sender.Tell(new TaskCompleted(work.Run, work.Task, Tier, result.Bytes, result.StoppedAfterToken));
    }

    /// <summary>Props of the actor for <paramref name="tier"/> on its own pinned dispatcher.</summary>
    public static Props PropsFor(PipelineActorKind tier, RunRegistry runs)
    {
        Props props = tier switch
        {
            PipelineActorKind.GpuCompute => Props.Create(() => new GpuComputeActor(runs)),
            PipelineActorKind.CpuCompute => Props.Create(() => new CpuComputeActor(runs)),
            PipelineActorKind.Copy => Props.Create(() => new CopyActor(runs)),
            PipelineActorKind.DiskIo => Props.Create(() => new DiskIoActor(runs)),
            _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
        };
        return props.WithDispatcher(FlexGenHocon.DispatcherOf(tier));
    }
}

/// <summary>Layer math on the GPU tier (emulated in CPU memory without CUDA); owns the compute stream's thread.</summary>
public sealed class GpuComputeActor : PipelineActor
{
    public GpuComputeActor(RunRegistry runs)
        : base(PipelineActorKind.GpuCompute, runs)
    {
    }
}

/// <summary>Decode attention over CPU-resident cache rows (cpu_cache_compute).</summary>
public sealed class CpuComputeActor : PipelineActor
{
    public CpuComputeActor(RunRegistry runs)
        : base(PipelineActorKind.CpuCompute, runs)
    {
    }
}

/// <summary>CPU &lt;-&gt; GPU copies: weights in, cache in/out, hidden in/out; owns the copy stream's thread.</summary>
public sealed class CopyActor : PipelineActor
{
    public CopyActor(RunRegistry runs)
        : base(PipelineActorKind.Copy, runs)
    {
    }
}

/// <summary>Disk reads and writes (weights, cache and activations homed on disk).</summary>
public sealed class DiskIoActor : PipelineActor
{
    public DiskIoActor(RunRegistry runs)
        : base(PipelineActorKind.DiskIo, runs)
    {
    }
}
