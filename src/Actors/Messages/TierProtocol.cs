namespace FlexGen.Actors.Messages;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

// Coordinator <-> tier actors. A tier actor receives the parts of block-schedule tasks that belong to it
// (LoadWeight(i, j), LoadCache(i, j, k), LoadHidden, ComputeLayer, StoreCache, StoreHidden: the BlockTask's
// Kind), strictly in block order, runs each on its own thread against the run (which owns the buffers), and
// answers with TaskCompleted, or TaskSkipped when the run was cancelled before the part started. A part that
// throws is not answered: the actor fails with TierTaskException and the coordinator's supervisor strategy
// fails the request.

/// <summary>Run <see cref="Task"/>'s part for <see cref="Tier"/> against <see cref="Run"/>.</summary>
public sealed record ExecuteTask(IPipelineRun Run, BlockTask Task, PipelineActorKind Tier);

public sealed record TaskCompleted(IPipelineRun Run, BlockTask Task, PipelineActorKind Tier);

public sealed record TaskSkipped(IPipelineRun Run, BlockTask Task, PipelineActorKind Tier);

/// <summary>A tier actor's task part threw; the cause is <see cref="Exception.InnerException"/>.</summary>
public sealed class TierTaskException : Exception
{
    public TierTaskException(IPipelineRun run, BlockTask task, PipelineActorKind tier, Exception cause)
        : base($"{tier.ActorName()} failed at {task}: {cause.Message}", cause)
    {
        Run = run;
        Task = task;
        Tier = tier;
    }

    public IPipelineRun Run { get; }

    public BlockTask Task { get; }

    public PipelineActorKind Tier { get; }
}
