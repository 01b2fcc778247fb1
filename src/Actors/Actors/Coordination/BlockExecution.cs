namespace FlexGen.Actors.Actors.Coordination;

using Akka.Actor;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

/// <summary>
/// The bookkeeping of one running block: its run (registered in the coordinator's <see cref="RunRegistry"/>), what may
/// start next (<see cref="BlockDispatcher"/>), when prefill ended, and which tokens are done (reported in order).
/// </summary>
internal sealed class BlockExecution
{
    private readonly int[] _tasksLeftPerToken;
    private readonly long[]?[] _validIds; // per token: the valid rows' ids once every GPU batch's were handed over
    private readonly int[] _rowsWritten;
    private int _prefillTasksLeft;
    private bool _stopApplied;

    private BlockExecution(int index, IPipelineRun run, BlockDispatcher dispatcher, ScheduleShape shape, TimeSpan started)
    {
        Shape = shape;
        Index = index;
        Run = run;
        Dispatcher = dispatcher;
        Started = started;
        Tokens = run.Block.ExecuteGenLen;
        _tasksLeftPerToken = new int[Tokens];
        _validIds = new long[]?[Tokens];
        _rowsWritten = new int[Tokens];
    }

    public int Index { get; }

    public IPipelineRun Run { get; }

    public BlockDispatcher Dispatcher { get; }

    /// <summary>The block schedule's shape (its layers; whether they are a pipeline's first or last stage).</summary>
    public ScheduleShape Shape { get; }

    /// <summary>The tokens this block runs (cut_gen_len or gen_len).</summary>
    public int Tokens { get; }

    /// <summary>Tokens whose tasks are all done (a prefix: tokens are counted in order).</summary>
    public int TokensDone { get; private set; }

    public TimeSpan Started { get; }

    public TimeSpan? PrefillEnded { get; private set; }

    /// <summary>Plans block <paramref name="index"/>, creates its run and registers it under <paramref name="id"/>.</summary>
    public static BlockExecution Start(int index, BlockRequest block, RunId id, IPipelineBackend backend, RunRegistry runs, Tracing.TraceRecorder trace, PipelineSettings options)
    {
        var plan = backend.Plan(block, options.PrefetchSteps);
        var dispatcher = new BlockDispatcher(plan.Schedule, plan.Route, options.MaxInFlightPerTier);
        var run = backend.CreateRun(id, block, plan, trace);
        runs.Add(run);
        var execution = new BlockExecution(index, run, dispatcher, plan.Schedule.Shape, trace.Now);
        foreach (var scheduled in plan.Schedule.Tasks)
        {
            if (scheduled.Task.Token == 0)
            {
                execution._prefillTasksLeft++;
            }

            if (scheduled.Task.Token < execution.Tokens)
            {
                execution._tasksLeftPerToken[scheduled.Task.Token]++;
            }
        }

        return execution;
    }

    /// <summary>Sends every part that may start now to its pipeline actor (from inside the owning actor: it is the sender).</summary>
    public void DispatchReady(IReadOnlyDictionary<PipelineActorKind, IActorRef> tiers)
    {
        foreach (var (task, tier) in Dispatcher.TakeReady())
        {
            tiers[tier].Tell(new ExecuteTask(Run.Id, task, tier));
        }
    }

    /// <summary>Records a completed part at <paramref name="now"/>; returns how many more tokens are done.</summary>
    public int Complete(TaskCompleted completed, TimeSpan now)
    {
        var task = completed.Task;
        Dispatcher.Complete(task, completed.Actor);
        if (completed.Tokens is { } written && written.Token < Tokens)
        {
            Collect(written);
        }

        int before = TokensDone;
        if (Dispatcher.IsDone(task))
        {
            if (task.Token == 0 && --_prefillTasksLeft == 0)
            {
                PrefillEnded = now;
            }

            // Tasks of later tokens may finish first: a token counts once all its tasks, and all earlier tokens, are done.
            if (task.Token < Tokens && --_tasksLeftPerToken[task.Token] == 0)
            {
                while (TokensDone < Tokens && _tasksLeftPerToken[TokensDone] == 0)
                {
                    TokensDone++;
                }
            }
        }

        if (completed.StoppedAfterToken is { } stoppedAfter)
        {
            StopAfter(stoppedAfter);
        }

        return TokensDone - before;
    }

    /// <summary>
    /// Every sequence of the block emitted the stop token by <paramref name="token"/>: its later positions stay pads
    /// (FlexGen breaks here too), so their parts not yet started are dropped. Applied once. Returns whether it was new.
    /// </summary>
    public bool StopAfter(int token)
    {
        if (_stopApplied)
        {
            return false;
        }

        _stopApplied = true;
        Dispatcher.DropAfterToken(token);
        return true;
    }

    /// <summary>
    /// The valid rows' ids of token <paramref name="token"/> (0-based), when every row's was handed over; null otherwise.
    /// </summary>
    public GeneratedTokens? NewTokens(int token) =>
        token < Tokens && _validIds[token] is { } ids && _rowsWritten[token] >= ids.Length ? new GeneratedTokens(token, 0, [.. ids]) : null;

    private void Collect(GeneratedTokens written)
    {
        int validRows = Run.Block.ValidRows;
        var ids = _validIds[written.Token] ??= new long[validRows];
        for (int r = 0; r < written.Ids.Length; r++)
        {
            int row = written.FirstRow + r;
            if (row < validRows)
            {
                ids[row] = written.Ids[r];
                _rowsWritten[written.Token]++;
            }
        }
    }

    /// <summary>A stop token ended the block early: its remaining tokens are pads, and the block is complete.</summary>
    public bool CompleteRemainingTokens()
    {
        bool early = TokensDone < Tokens;
        TokensDone = Tokens;
        return early;
    }

    /// <summary>Unregisters and disposes the run (no pipeline actor can touch it any more).</summary>
    public void Free(RunRegistry runs)
    {
        runs.Remove(Run.Id);
        Run.Dispose();
    }
}
