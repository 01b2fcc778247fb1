namespace FlexGen.Actors.Messages;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

// Coordinator <-> pipeline actors. An actor receives the parts of block-schedule tasks that belong to it
// (LoadWeight(i, j), LoadCache(i, j, k), LoadHidden, ComputeLayer, StoreCache, StoreHidden: the BlockTask's
// Kind), strictly in block order, finds the run by id (RunRegistry), runs each part on its own thread, waits
// for the part's work on its stream, lets the run release what the part used last, and answers TaskCompleted,
// or TaskSkipped when the run was cancelled (or is gone) before the part started. Messages carry ids and
// immutable data only.

/// <summary>Run <see cref="Task"/>'s part for <see cref="Actor"/> of run <see cref="Run"/>.</summary>
public sealed record ExecuteTask(RunId Run, BlockTask Task, PipelineActorKind Actor);

/// <param name="Bytes">Bytes the part moved or read.</param>
/// <param name="StoppedAfterToken">See <see cref="PartResult.StoppedAfterToken"/>.</param>
public sealed record TaskCompleted(RunId Run, BlockTask Task, PipelineActorKind Actor, long Bytes = 0, int? StoppedAfterToken = null);

public sealed record TaskSkipped(RunId Run, BlockTask Task, PipelineActorKind Actor);

/// <summary>A pipeline actor's task part threw; the cause is <see cref="Exception.InnerException"/>.</summary>
public sealed class TierTaskException : Exception
{
    public TierTaskException(RunId run, BlockTask task, PipelineActorKind actor, Exception cause)
        : base($"{actor.ActorName()} failed at {task}: {cause.Message}", cause)
    {
        Run = run;
        Task = task;
        Actor = actor;
    }

    public RunId Run { get; }

    public BlockTask Task { get; }

    public PipelineActorKind Actor { get; }
}
