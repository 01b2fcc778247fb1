namespace FlexGen.Actors.Messages;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

// Coordinator <-> pipeline actors. An actor receives the parts of block-schedule tasks that belong to it
// (LoadWeight(i, j), LoadCache(i, j, k), LoadHidden, ComputeLayer, StoreCache, StoreHidden: the BlockTask's
// Kind), strictly in block order, finds the run by id (RunRegistry), runs each part on its own thread, waits
// for the part's work on its stream, lets the run release what the part used last, and answers TaskCompleted (with the token ids a
// last-layer StoreHidden wrote);
// TaskSkipped when the run was cancelled (or is gone) before the part started; TaskFailed when the part threw
// (after its stream finished whatever the part had queued). Messages carry ids and immutable data only.

/// <summary>Run <see cref="Task"/>'s part for <see cref="Actor"/> of run <see cref="Run"/>.</summary>
public sealed record ExecuteTask(RunId Run, BlockTask Task, PipelineActorKind Actor);

/// <param name="Bytes">Bytes the part moved or read.</param>
/// <param name="StoppedAfterToken">See <see cref="PartResult.StoppedAfterToken"/>.</param>
/// <param name="Tokens">The token ids the part wrote (see <see cref="PartResult.Tokens"/>); null for most parts.</param>
public sealed record TaskCompleted(RunId Run, BlockTask Task, PipelineActorKind Actor, long Bytes = 0, int? StoppedAfterToken = null,
    GeneratedTokens? Tokens = null);

public sealed record TaskSkipped(RunId Run, BlockTask Task, PipelineActorKind Actor);

/// <summary>
/// <see cref="Actor"/>'s part of <see cref="Task"/> threw <see cref="Cause"/>. Nothing of the part is still running
/// on the actor's stream; the run (and what the part allocated in it) is freed by the coordinator.
/// </summary>
public sealed record TaskFailed(RunId Run, BlockTask Task, PipelineActorKind Actor, Exception Cause);
