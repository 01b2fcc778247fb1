namespace FlexGen.Actors.Pipeline;

using FlexGen.Actors.Schedule;

/// <summary>
/// Decides when each task part of one block may be handed to its tier (pure state, driven by the
/// coordinator). Each tier gets its parts strictly in block order. A part is released when
/// <list type="bullet">
/// <item>overlap off: every earlier task in block order has completed (load -&gt; compute -&gt; store, one at a time);</item>
/// <item>overlap on: the tasks it depends on (<see cref="BlockSchedule.DependenciesOf"/>) have completed, and the
/// compute of the step <see cref="ScheduleShape.PrefetchSteps"/> before the step that issues it has completed (with 1, the
/// loads for step s+1 and the stores of step s-1 run while step s computes, as in FlexGen; bounded prefetch buffers); a
/// weight load may run <see cref="ScheduleShape.WeightLookahead"/> layers ahead, whatever the prefetch steps say below
/// that (the plan that set both counts the buffers they keep in flight);</item>
/// <item>its tier has fewer than <c>maxInFlightPerTier</c> parts outstanding.</item>
/// </list>
/// In a pipeline stage, a part still waiting for another stage's input (<see cref="BlockSchedule.StageInput"/>) does not
/// hold up the later parts of its tier: the schedule issues the next token's first load before this token's last
/// store, and that store feeds the round trip through the other stages that the load waits for.
/// </summary>
public sealed class BlockDispatcher
{
    private readonly BlockSchedule _schedule;
    private readonly Func<BlockTask, IReadOnlyList<PipelineActorKind>> _route;
    private readonly int _maxInFlight;
    private readonly int _weightPrefetchSteps;
    private readonly Dictionary<PipelineActorKind, List<BlockTask>> _queues = new();
    private readonly Dictionary<PipelineActorKind, int> _inFlight = new();
    private readonly Dictionary<BlockTask, int> _partsLeft = new();
    private readonly BlockTask[][] _dependencies; // by position in block order
    private readonly HashSet<BlockTask> _done = new();
    private readonly HashSet<BlockTask> _arrived = new(); // inputs from other pipeline stages (BlockSchedule.StageInput)
    private readonly bool[] _computeDone;
    private int _firstNotDone;

    public BlockDispatcher(BlockSchedule schedule, Func<BlockTask, IReadOnlyList<PipelineActorKind>> route, int maxInFlightPerTier)
    {
        if (maxInFlightPerTier < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxInFlightPerTier), maxInFlightPerTier, "must be >= 1");
        }

        _schedule = schedule;
        _route = route;
        _maxInFlight = maxInFlightPerTier;
        _computeDone = new bool[schedule.StepCount];
        // A weight load of layer j + 1 sits at step (j, 0); W layers ahead of compute (c, 0) is the one at step
        // (c + W - 1, 0), whose gate must be the compute before (c, 0).
        _weightPrefetchSteps = Math.Max(schedule.Shape.PrefetchSteps, 1 + ((schedule.Shape.WeightLookahead - 1) * schedule.Shape.NumGpuBatches));
        _dependencies = schedule.Tasks.Select(t => schedule.DependenciesOf(t.Task).ToArray()).ToArray();
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            _queues[tier] = new List<BlockTask>();
            _inFlight[tier] = 0;
        }

        foreach (var scheduled in schedule.Tasks)
        {
            var tiers = route(scheduled.Task);
            if (tiers.Count == 0 || tiers.Distinct().Count() != tiers.Count)
            {
                throw new InvalidOperationException($"route of {scheduled.Task} must name each tier at most once and at least one tier");
            }

            foreach (var tier in tiers)
            {
                _queues[tier].Add(scheduled.Task);
            }

            _partsLeft[scheduled.Task] = tiers.Count;
        }
    }

    public bool IsFinished => _done.Count == _schedule.Tasks.Count;

    /// <summary>Task parts handed out and not yet answered.</summary>
    public int InFlight => _inFlight.Values.Sum();

    public bool IsDone(BlockTask task) => _done.Contains(task);

    /// <summary>Releases every part that may start now, in per-tier block order.</summary>
    public IReadOnlyList<(BlockTask Task, PipelineActorKind Tier)> TakeReady()
    {
        var ready = new List<(BlockTask, PipelineActorKind)>();
        bool progress = true;
        while (progress)
        {
            progress = false;
            foreach (var (tier, queue) in _queues)
            {
                int at = 0;
                while (at < queue.Count && _inFlight[tier] < _maxInFlight)
                {
                    if (IsReady(queue[at]))
                    {
                        ready.Add((queue[at], tier));
                        queue.RemoveAt(at);
                        _inFlight[tier]++;
                        progress = true;
                    }
                    else if (AwaitsStageInput(queue[at]))
                    {
                        at++;
                    }
                    else
                    {
                        break;
                    }
                }
            }
        }

        return ready;
    }

    /// <summary>Records that <paramref name="tier"/> finished its part of <paramref name="task"/>.</summary>
    public void Complete(BlockTask task, PipelineActorKind tier)
    {
        Release(tier);
        if (!_partsLeft.TryGetValue(task, out int left) || left == 0)
        {
            throw new InvalidOperationException($"{task} completed on {tier.ActorName()} more often than routed");
        }

        _partsLeft[task] = --left;
        if (left > 0)
        {
            return;
        }

        _done.Add(task);
        if (task.Kind == TaskKind.ComputeLayer)
        {
            _computeDone[_schedule.StepOf(task.Token, task.Layer, task.Batch)] = true;
        }

        while (_firstNotDone < _schedule.Tasks.Count && _done.Contains(_schedule.Tasks[_firstNotDone].Task))
        {
            _firstNotDone++;
        }
    }

    /// <summary>
    /// Leaves out every part of tokens after <paramref name="token"/> not yet handed out (every sequence of the block
    /// has stopped: FlexGen breaks out of its token loop there). Parts already handed out still complete. Nothing at or
    /// before <paramref name="token"/> depends on a later token, so the rest of the block runs as before. Returns the
    /// number of parts left out.
    /// </summary>
    public int DropAfterToken(int token)
    {
        int dropped = 0;
        foreach (var queue in _queues.Values)
        {
            foreach (var task in queue.Where(t => t.Token > token))
            {
                dropped++;
                if (--_partsLeft[task] == 0)
                {
                    _done.Add(task);
                }
            }

            queue.RemoveAll(t => t.Token > token);
        }

        while (_firstNotDone < _schedule.Tasks.Count && _done.Contains(_schedule.Tasks[_firstNotDone].Task))
        {
            _firstNotDone++;
        }

        return dropped;
    }

    /// <summary>
    /// Records that another pipeline stage delivered <paramref name="input"/> (a <see cref="BlockSchedule.StageInput"/>):
    /// the part that reads it may start.
    /// </summary>
    public void Arrived(BlockTask input)
    {
        if (!BlockSchedule.IsStageInput(input))
        {
            throw new ArgumentException($"{input} is not an input from another stage", nameof(input));
        }

        _arrived.Add(input);
    }

    /// <summary>Records that a handed-out part will not run (skipped or lost with its actor).</summary>
    public void Abandon(PipelineActorKind tier) => Release(tier);

    /// <summary>Forgets every part a tier had outstanding (its actor stopped).</summary>
    public void AbandonAll(PipelineActorKind tier) => _inFlight[tier] = 0;

    private void Release(PipelineActorKind tier)
    {
        if (_inFlight[tier] == 0)
        {
            throw new InvalidOperationException($"{tier.ActorName()} answered more parts than it was given");
        }

        _inFlight[tier]--;
    }

    /// <summary>True when <paramref name="task"/> waits for an input another pipeline stage has not sent yet.</summary>
    private bool AwaitsStageInput(BlockTask task) =>
        _dependencies[_schedule.PositionOf(task)].Any(d => BlockSchedule.IsStageInput(d) && !_arrived.Contains(d));

    private bool IsReady(BlockTask task)
    {
        int position = _schedule.PositionOf(task);
        if (!_schedule.Shape.Overlap)
        {
            return _firstNotDone == position && _dependencies[position].All(d => !BlockSchedule.IsStageInput(d) || _arrived.Contains(d));
        }

        int step = _schedule.Tasks[position].Step;
        int prefetch = _schedule.Tasks[position].Task.Kind == TaskKind.LoadWeight ? _weightPrefetchSteps : _schedule.Shape.PrefetchSteps;
        int gate = Math.Min(step, _computeDone.Length) - prefetch;
        if (gate >= 0 && !_computeDone[gate])
        {
            return false;
        }

        foreach (var dependency in _dependencies[position])
        {
            if (!_done.Contains(dependency) && !_arrived.Contains(dependency))
            {
                return false;
            }
        }

        return true;
    }
}
