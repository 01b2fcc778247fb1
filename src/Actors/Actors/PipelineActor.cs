namespace FlexGen.Actors.Actors;

using Akka.Actor;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors;

/// <summary>
/// The common loop of the tier actors: run each <see cref="ExecuteTask"/> part on this actor's own pinned
/// thread, wait for its stream, let the run release what the part used last, trace it, answer
/// <see cref="TaskCompleted"/>. Parts of a cancelled run are answered with <see cref="TaskSkipped"/> without running.
/// A part that throws is answered with <see cref="TaskFailed"/> once its stream is idle: the request's fate is the
/// coordinator's business, not supervision's. Tier actors hold no tensors between messages: every buffer belongs to
/// the run (the coordinator disposes it), so a restart loses nothing. A failure outside a part (e.g. the run's trace
/// cannot be read) fails the actor; the coordinator stops it and starts a fresh one.
/// </summary>
public abstract class PipelineActor : UntypedActor
{
    private readonly RunRegistry _runs;
    private readonly PartStreamFactory _streams;
    private IPartStream? _stream;

    protected PipelineActor(PipelineActorKind tier, RunRegistry runs, PartStreamFactory? streams)
    {
        Tier = tier;
        _runs = runs;
        _streams = streams ?? CudaPartStream.For;
    }

    public PipelineActorKind Tier { get; }

    /// <summary>
    /// Names the pinned thread and makes this actor's stream current on it (with CUDA the copy and disk actors'
    /// transfers then overlap the compute actor's kernels). The copy and disk actors run libtorch serially: an OpenMP
    /// team of theirs would throttle the compute's (<see cref="OpenMpTeams"/>).
    /// </summary>
    protected override void PreStart()
    {
        Thread.CurrentThread.Name ??= $"flexgen-{Tier.ActorName()}";
        if (Tier.IsIo())
        {
            OpenMpTeams.KeepSerial();
        }

        _stream = _streams(Tier);
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
        }
        catch (Exception e)
        {
            // Kernels or copies the part queued before it threw may still run: let them finish before the coordinator
            // frees the run. Buffers the part took stay with the run, which frees them when it is disposed.
            _stream?.Synchronize();
            Sender.Tell(new TaskFailed(work.Run, work.Task, Tier, e));
            return;
        }

        // The part's kernels or copies were queued on this actor's stream: they must have finished before another
        // actor (another stream) uses the data, and before the run frees what the part used last.
        _stream?.Synchronize();
        try
        {
            run.Release(work.Task, Tier);
        }
        catch (Exception e)
        {
            Sender.Tell(new TaskFailed(work.Run, work.Task, Tier, e));
            return;
        }

        trace.Record(Tier, work.Task, start, trace.Now, result.Bytes);
        Sender.Tell(new TaskCompleted(work.Run, work.Task, Tier, result.Bytes, result.StoppedAfterToken, result.Tokens));
    }

    /// <summary>
    /// Props of the actor for <paramref name="tier"/> on its own pinned dispatcher; <paramref name="streams"/> null:
    /// <see cref="CudaPartStream.For"/>.
    /// </summary>
    public static Props PropsFor(PipelineActorKind tier, RunRegistry runs, PartStreamFactory? streams = null)
    {
        Props props = tier switch
        {
            PipelineActorKind.GpuCompute => Props.Create(() => new GpuComputeActor(runs, streams)),
            PipelineActorKind.CpuCompute => Props.Create(() => new CpuComputeActor(runs, streams)),
            PipelineActorKind.Copy => Props.Create(() => new CopyActor(runs, streams)),
            PipelineActorKind.DiskIo => Props.Create(() => new DiskIoActor(runs, streams)),
            _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
        };
        return props.WithDispatcher(FlexGenHocon.DispatcherOf(tier));
    }
}

/// <summary>Layer math on the GPU tier (emulated in CPU memory without CUDA); owns the compute stream's thread.</summary>
public sealed class GpuComputeActor(RunRegistry runs, PartStreamFactory? streams) : PipelineActor(PipelineActorKind.GpuCompute, runs, streams);

/// <summary>Decode attention over CPU-resident cache rows (cpu_cache_compute).</summary>
public sealed class CpuComputeActor(RunRegistry runs, PartStreamFactory? streams) : PipelineActor(PipelineActorKind.CpuCompute, runs, streams);

/// <summary>CPU &lt;-&gt; GPU copies: weights in, cache in/out, hidden in/out; owns the copy stream's thread.</summary>
public sealed class CopyActor(RunRegistry runs, PartStreamFactory? streams) : PipelineActor(PipelineActorKind.Copy, runs, streams);

/// <summary>Disk reads and writes (weights, cache and activations homed on disk).</summary>
public sealed class DiskIoActor(RunRegistry runs, PartStreamFactory? streams) : PipelineActor(PipelineActorKind.DiskIo, runs, streams);
