namespace FlexGen.Actors.Stages;

using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;
using FlexGen.Actors.Actors.Coordination;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Models;

/// <summary>What the coordinating node's pipeline is to be.</summary>
/// <param name="Stages">Stages in all, the coordinating node's own the first.</param>
/// <param name="StageWait">How long <see cref="FormPipeline"/> waits for the other Stages - 1 nodes to be up.</param>
/// <param name="Model">The model every stage loads its layers of, as the stages resolve it.</param>
/// <param name="Config">Its shape (layer bytes for the plan).</param>
/// <param name="MaxPromptLen">The longest prompt a request may bring (the frame size was set for it).</param>
/// <param name="MaxGenLen">The most tokens a request may generate (the size of a stage's result).</param>
public sealed record StagePipelineSettings(int Stages, TimeSpan StageWait, StageModel Model, ModelConfig Config, int MaxPromptLen, int MaxGenLen)
{
    /// <summary>The cluster role of nodes that serve a stage.</summary>
    public const string StageRole = "flexgen-stage";

    /// <summary>How long stages may take to answer a description or to load their layers.</summary>
    public TimeSpan LoadTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How long survivors of a failed request get to free their part of it before the failure is answered.</summary>
    public TimeSpan AbortTimeout { get; init; } = TimeSpan.FromSeconds(5);
}

/// <summary>A stage of the running request is gone or failed: names its node and the layers it held.</summary>
public sealed class StageLostException(string message) : Exception(message);

/// <summary>
/// The coordinating node's side of a pipeline over several nodes of an Akka cluster. <see cref="FormPipeline"/>: waits
/// until the other stages' nodes are up (cluster members with role <see cref="StagePipelineSettings.StageRole"/>), asks
/// each stage actor to describe itself, plans the layer ranges (<see cref="PipelinePlanner"/>) and has every stage load
/// its range; answers the <see cref="PipelinePlan"/>. Then answers <see cref="GenerateRequest"/>s as the
/// <see cref="Actors.GenerationCoordinator"/> does (one at a time, in order; <see cref="GenerationProgress"/> per token;
/// <see cref="GenerationResult"/> with the nodes' traces merged), driving each block through every stage at once.
/// A stage's node that Akka's failure detector finds unreachable, or that leaves, fails the running request naming the
/// node and its layers; the surviving stages free that block and their layers, and the next request needs a new plan.
/// Nodes that join meanwhile wait for that next plan.
/// </summary>
public sealed class PipelineCoordinator : UntypedActor, IWithTimers
{
    private readonly StagePipelineSettings _settings;
    private readonly IActorRef _localStage;
    private readonly Cluster _cluster = Cluster.Get(Context.System);
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly PendingRequests _queue = new();
    private readonly HashSet<Address> _upStages = new();
    private readonly HashSet<Address> _unreachable = new();
    private Forming? _forming;
    private PipelinePlan? _plan;
    private IActorRef[] _stages = [];
    private Guid _pipelineId; // the pipeline whose layers _stages hold
    private RequestRun? _running;

    public PipelineCoordinator(StagePipelineSettings settings, IActorRef localStage)
    {
        _settings = settings;
        _localStage = localStage;
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(StagePipelineSettings settings, IActorRef localStage) =>
        Akka.Actor.Props.Create(() => new PipelineCoordinator(settings, localStage));

    protected override void PreStart() =>
        _cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.IMemberEvent), typeof(ClusterEvent.IReachabilityEvent));

    protected override void PostStop()
    {
        _cluster.Unsubscribe(Self);
        var stopped = new OperationCanceledException("the pipeline coordinator stopped");
        _forming?.ReplyTo.Tell(new Status.Failure(stopped));
        if (_running is { } running)
        {
            AbortEverywhere(running.Run);
            running.ReplyTo.Tell(Failure(running.Request.RequestId, stopped));
        }

        foreach (var (request, replyTo) in _queue.TakeAll())
        {
            replyTo.Tell(Failure(request.RequestId, stopped));
        }

        Release();
    }

    protected override void OnReceive(object message)
    {
        switch (message)
        {
            case ClusterEvent.MemberUp up when up.Member.HasRole(StagePipelineSettings.StageRole):
                _upStages.Add(up.Member.Address);
                TryDescribe();
                break;
            case ClusterEvent.MemberRemoved removed:
                Lost(removed.Member.Address, "left the cluster");
                break;
            case ClusterEvent.MemberLeft left:
                Lost(left.Member.Address, "is leaving the cluster");
                break;
            case ClusterEvent.UnreachableMember unreachable:
                _unreachable.Add(unreachable.Member.Address);
                Lost(unreachable.Member.Address, "is unreachable (Akka's failure detector)");
                break;
            case ClusterEvent.ReachableMember reachable:
                _unreachable.Remove(reachable.Member.Address);
                break;
            case ClusterEvent.IMemberEvent or ClusterEvent.IReachabilityEvent:
                break;
            case FormPipeline:
                Form();
                break;
            case StageDescription description when _forming is { Loading: false } forming:
                forming.Described[Sender] = description;
                TryPlan(forming);
                break;
            case StageLoaded loaded when _forming is { } forming && loaded.PipelineId == forming.Id:
                if (--forming.LoadsLeft == 0)
                {
                    FormedPipeline(forming);
                }

                break;
            case StageLoadFailed failed when _forming is { } forming && failed.PipelineId == forming.Id:
                FormFailed($"stage {failed.Index} on {failed.Node} could not load its layers: {failed.Reason}");
                break;
            case FormTimeout timeout when _forming is { } forming && timeout.Id == forming.Id:
                FormFailed(forming.Loading
                    ? $"the stages did not load their layers within {_settings.LoadTimeout.TotalSeconds:0} s"
                    : $"waited {_settings.StageWait.TotalSeconds:0} s for {_settings.Stages - 1} stage nodes (role {StagePipelineSettings.StageRole}); {OtherStages().Count} are up: {string.Join(", ", OtherStages())}");
                break;
            case GenerateRequest request:
                _queue.Add(request, Sender);
                StartNext();
                break;
            case CancelGeneration cancel when _running?.Request.RequestId == cancel.RequestId:
                FailRunning(new OperationCanceledException($"request {cancel.RequestId} was cancelled"));
                break;
            case CancelGeneration cancel:
                Cancel(cancel.RequestId);
                break;
            case StageTokens tokens when _running is { } running && running.Run == tokens.Run:
                running.Collect(tokens.Tokens);
                break;
            case StageStopped stopped when _running is { } running && running.Run == stopped.Run:
                Array.ForEach(_stages, stage => stage.Tell(new StopStageAfter(stopped.Run, stopped.Token)));
                break;
            case StageBlockDone done when _running is { Aborting: false } running && running.Run == done.Run:
                running.Done[done.Index] = done;
                if (running.Done.All(d => d is not null))
                {
                    FinishBlock(running);
                }

                break;
            case StageBlockFailed failed when _running is { } running && running.Run == failed.Run:
                FailRunning(new StageLostException($"stage {failed.Index} ({_plan?.Stages[failed.Index].Layers}) on {failed.Node} failed: {failed.Reason}"));
                break;
            case StageBlockAborted aborted when _running is { Aborting: true } running && running.Run == aborted.Run:
                if (--running.AbortsLeft == 0)
                {
                    AnswerFailure(running);
                }

                break;
            case AbortTimeout timeout when _running is { Aborting: true } running && running.Run == timeout.Run:
                AnswerFailure(running);
                break;
            case Terminated terminated when _stages.Contains(terminated.ActorRef):
                Lost(terminated.ActorRef.Path.Address, "stopped its stage actor");
                break;
            case StageDescription or StageLoaded or StageLoadFailed or FormTimeout or StageTokens or StageStopped or StageBlockDone or StageBlockFailed
                or StageBlockAborted or AbortTimeout or Terminated:
                break; // about a plan or a block already gone
            default:
                Unhandled(message);
                break;
        }
    }

    private List<Address> OtherStages() =>
        [.. _upStages.Where(a => a != _cluster.SelfAddress && !_unreachable.Contains(a)).OrderBy(a => a.ToString(), StringComparer.Ordinal)];

    private void Form()
    {
        if (_running is not null || _forming is not null)
        {
            Sender.Tell(new Status.Failure(new PipelinePlanException(_running is not null ? "a request is running on the current pipeline" : "the pipeline is being formed")));
            return;
        }

        Release();
        _forming = new Forming(Guid.NewGuid(), Sender);
        Timers.StartSingleTimer("form", new FormTimeout(_forming.Id), _settings.StageWait);
        TryDescribe();
    }

    /// <summary>Once enough stage nodes are up: asks the first Stages - 1 of them (by address) and the local stage to describe themselves.</summary>
    private void TryDescribe()
    {
        if (_forming is not { Asked: false } forming || OtherStages().Count < _settings.Stages - 1)
        {
            return;
        }

        forming.Asked = true;
        forming.Order = [_cluster.SelfAddress, .. OtherStages().Take(_settings.Stages - 1)];
        _localStage.Tell(DescribeStage.Instance);
        foreach (var address in forming.Order.Skip(1))
        {
            Context.ActorSelection(new RootActorPath(address) / "user" / StageActor.Name).Tell(DescribeStage.Instance);
        }
    }

    private void TryPlan(Forming forming)
    {
        if (forming.Described.Count < _settings.Stages)
        {
            return;
        }

        var byNode = forming.Described.ToDictionary(d => d.Value.Node, d => (Ref: d.Key, Description: d.Value));
        var ordered = forming.Order.Select(a => byNode.TryGetValue(a.ToString(), out var found) ? found : throw new PipelinePlanException($"no stage answered from {a}")).ToArray();
        try
        {
            _plan = PipelinePlanner.Plan(forming.Id, _settings.Config, [.. ordered.Select(o => o.Description)], _settings.MaxPromptLen, _settings.MaxGenLen);
        }
        catch (Exception e) when (e is PipelinePlanException or ArgumentException)
        {
            FormFailed(e.Message);
            return;
        }

        _stages = [.. ordered.Select(o => o.Ref)];
        _pipelineId = forming.Id;
        foreach (var stage in _stages.Where(s => !s.Equals(_localStage)))
        {
            Context.Watch(stage);
        }

        forming.Loading = true;
        forming.LoadsLeft = _stages.Length;
        Timers.StartSingleTimer("form", new FormTimeout(forming.Id), _settings.LoadTimeout);
        _log.Info("{0}", _plan);
        for (int s = 0; s < _stages.Length; s++)
        {
            _stages[s].Tell(new LoadStage(forming.Id, s, _settings.Model, _plan.Stages[s].Layers));
        }
    }

    private void FormedPipeline(Forming forming)
    {
        Timers.Cancel("form");
        _forming = null;
        forming.ReplyTo.Tell(_plan);
        StartNext();
    }

    private void FormFailed(string reason)
    {
        var forming = _forming!;
        Timers.Cancel("form");
        _forming = null;
        Release();
        forming.ReplyTo.Tell(new Status.Failure(new PipelinePlanException(reason)));
    }

    private void StartNext()
    {
        while (_running is null && _forming is null && _queue.TryTake(out var next))
        {
            try
            {
                if (_plan is null)
                {
                    throw new PipelinePlanException($"no complete pipeline of {_settings.Stages} stages: form one first ({nameof(FormPipeline)})");
                }

                RequestBlocks.Validate(next.Request);
                int promptLen = next.Request.PromptIds[0].Length;
                if (promptLen > _settings.MaxPromptLen || next.Request.Generation.GenLen > _settings.MaxGenLen)
                {
                    throw new PipelinePlanException(
                        $"the pipeline's frames were sized for prompts of up to {_settings.MaxPromptLen} tokens and {_settings.MaxGenLen} new tokens; the request has {promptLen} and {next.Request.Generation.GenLen}");
                }

                var blocks = RequestBlocks.Split(next.Request, _plan.Stages[0].Policy, _settings.Config.PadTokenId);
                _running = new RequestRun(next.Request, next.ReplyTo, blocks, _stages.Length);
            }
            catch (Exception e)
            {
                next.ReplyTo.Tell(Failure(next.Request.RequestId, e));
                continue;
            }

            StartBlock(_running, 0);
        }
    }

    private void StartBlock(RequestRun running, int index)
    {
        running.StartBlock(index);
        for (int s = 0; s < _stages.Length; s++)
        {
            _stages[s].Tell(new RunStageBlock(_plan!.PipelineId, s, running.Run, running.Blocks[index], _stages[(s + 1) % _stages.Length], _stages[0], Self));
        }
    }

    private void FinishBlock(RequestRun running)
    {
        running.FinishBlock(_plan!);
        if (running.BlockIndex + 1 < running.Blocks.Count)
        {
            StartBlock(running, running.BlockIndex + 1);
            return;
        }

        _running = null;
        running.ReplyTo.Tell(running.Result());
        StartNext();
    }

    /// <summary>A node left or became unreachable: if it holds a stage of the plan, the plan is gone and a running request fails.</summary>
    private void Lost(Address node, string what)
    {
        _upStages.Remove(node);
        int index = Array.FindIndex(_stages, s => s.Path.Address == node);
        if (index < 0 || _plan is null)
        {
            return;
        }

        var stage = _plan.Stages[index];
        var cause = new StageLostException($"stage {index} ({stage.Layers}) on {node} {what}");
        _log.Warning("{0}", cause.Message);
        if (_running is { } running)
        {
            FailRunning(cause, lost: index);
        }
        else
        {
            Release();
        }
    }

    /// <summary>Aborts the running block on every stage still there; the request is answered once they freed it (or after the abort timeout).</summary>
    private void FailRunning(Exception cause, int? lost = null)
    {
        var running = _running!;
        if (running.Aborting)
        {
            return;
        }

        running.Aborting = true;
        running.Cause = cause;
        running.AbortsLeft = _stages.Length - (lost is null ? 0 : 1);
        for (int s = 0; s < _stages.Length; s++)
        {
            if (s != lost)
            {
                _stages[s].Tell(new AbortStageBlock(running.Run));
            }
        }

        if (lost is not null)
        {
            _plan = null; // a stage is gone: the next request needs a new plan
        }

        Timers.StartSingleTimer("abort", new AbortTimeout(running.Run), _settings.AbortTimeout);
        if (running.AbortsLeft == 0)
        {
            AnswerFailure(running);
        }
    }

    private void AnswerFailure(RequestRun running)
    {
        Timers.Cancel("abort");
        _running = null;
        if (_plan is null)
        {
            Release();
        }

        running.ReplyTo.Tell(Failure(running.Request.RequestId, running.Cause!));
        StartNext();
    }

    private void AbortEverywhere(RunId run) => Array.ForEach(_stages, stage => stage.Tell(new AbortStageBlock(run)));

    private void Cancel(Guid requestId)
    {
        if (_queue.TryRemove(requestId, out var queued))
        {
            queued.ReplyTo.Tell(Failure(requestId, new OperationCanceledException($"request {requestId} was cancelled before it started")));
        }
    }

    /// <summary>Every stage frees its layers (tiers, offload folder); the plan is gone.</summary>
    private void Release()
    {
        // Also after a lost stage dropped the plan: the survivors still hold its layers.
        Array.ForEach(_stages, stage => stage.Tell(new ReleaseStage(_pipelineId)));

        foreach (var stage in _stages.Where(s => !s.Equals(_localStage)))
        {
            Context.Unwatch(stage);
        }

        _plan = null;
        _stages = [];
    }

    private static Status.Failure Failure(Guid requestId, Exception cause) =>
        new(new GenerationFailedException(requestId, $"request {requestId} failed: {cause.Message}", cause));

    private sealed record FormTimeout(Guid Id);

    private sealed record AbortTimeout(RunId Run);

    private sealed class Forming(Guid id, IActorRef replyTo)
    {
        public Guid Id { get; } = id;

        public IActorRef ReplyTo { get; } = replyTo;

        public bool Asked { get; set; }

        public Address[] Order { get; set; } = [];

        public Dictionary<IActorRef, StageDescription> Described { get; } = new();

        public bool Loading { get; set; }

        public int LoadsLeft { get; set; }
    }

    /// <summary>A request going through the pipeline, one block at a time: every stage's part of the block runs at once.</summary>
    private sealed class RequestRun(GenerateRequest request, IActorRef replyTo, IReadOnlyList<BlockRequest> blocks, int stages)
    {
        private readonly TraceRecorder _clock = new();
        private readonly List<TraceEvent> _events = new();
        private readonly ImmutableArray<ImmutableArray<long>>.Builder _outputs = ImmutableArray.CreateBuilder<ImmutableArray<long>>();
        private readonly Dictionary<string, long> _peaks = new();
        private long[]?[] _tokenIds = [];
        private int[] _rowsWritten = [];
        private int _tokensReported;
        private TimeSpan _blockStarted;
        private TimeSpan? _prefillEnded;
        private TimeSpan _prefill;
        private TimeSpan _decode;

        public GenerateRequest Request { get; } = request;

        public IActorRef ReplyTo { get; } = replyTo;

        public IReadOnlyList<BlockRequest> Blocks { get; } = blocks;

        public int BlockIndex { get; private set; }

        public RunId Run => new(Request.RequestId, BlockIndex);

        public StageBlockDone?[] Done { get; private set; } = new StageBlockDone?[stages];

        public bool Aborting { get; set; }

        public Exception? Cause { get; set; }

        public int AbortsLeft { get; set; }

        private BlockRequest Block => Blocks[BlockIndex];

        public void StartBlock(int index)
        {
            BlockIndex = index;
            Done = new StageBlockDone?[Done.Length];
            _tokenIds = new long[]?[Block.ExecuteGenLen];
            _rowsWritten = new int[Block.ExecuteGenLen];
            _tokensReported = 0;
            _blockStarted = _clock.Now;
            _prefillEnded = null;
        }

        /// <summary>The last stage sampled a token of some rows: reports each token once all valid rows have it, in order.</summary>
        public void Collect(GeneratedTokens tokens)
        {
            if (tokens.Token >= _tokenIds.Length)
            {
                return;
            }

            var ids = _tokenIds[tokens.Token] ??= new long[Block.ValidRows];
            for (int r = 0; r < tokens.Ids.Length; r++)
            {
                int row = tokens.FirstRow + r;
                if (row < Block.ValidRows)
                {
                    ids[row] = tokens.Ids[r];
                    _rowsWritten[tokens.Token]++;
                }
            }

            while (_tokensReported < _tokenIds.Length && _tokenIds[_tokensReported] is { } done && _rowsWritten[_tokensReported] >= done.Length)
            {
                _prefillEnded ??= _clock.Now;
                _tokensReported++;
                Report(_tokensReported, new GeneratedTokens(_tokensReported - 1, 0, [.. done]));
            }
        }

        /// <summary>Every stage finished the block: takes the last stage's ids, the nodes' traces and peaks.</summary>
        public void FinishBlock(PipelinePlan plan)
        {
            var now = _clock.Now;
            _prefill += (_prefillEnded ?? now) - _blockStarted;
            _decode += now - (_prefillEnded ?? now);
            var last = Done[^1]!;
            _outputs.AddRange(last.OutputIds);
            if (_tokensReported < Block.ExecuteGenLen)
            {
                // A stop token ended the block early: the last report carries the pads of the last position.
                Report(Block.ExecuteGenLen, new GeneratedTokens(Block.ExecuteGenLen - 1, 0, [.. last.OutputIds.Select(row => row[Block.ExecuteGenLen - 1])]));
            }

            var merged = ExecutionTrace.Merge(_clock.OriginUtc, Done.Select(d => (NodeName(plan, d!.Index), d.TraceOriginUtc, (IEnumerable<TraceEvent>)d.Trace)));
            _events.AddRange(merged.Events);
            foreach (var tier in Done.SelectMany(d => d!.PeakBytes.Keys).Distinct())
            {
                // The pipeline's memory is its nodes' together: each tier's peaks added over the stages.
                _peaks[tier] = Math.Max(_peaks.GetValueOrDefault(tier), Done.Sum(d => d!.PeakBytes.GetValueOrDefault(tier)));
            }
        }

        public GenerationResult Result() =>
            new(Request.RequestId, _outputs.ToImmutable(), new PhaseTimings(_prefill, _decode), _peaks.ToImmutableDictionary(),
                new ExecutionTrace([.. _events.OrderBy(e => e.Start).ThenBy(e => e.Tier)]));

        private static string NodeName(PipelinePlan plan, int index) => $"stage {index} ({plan.Stages[index].Layers}) {plan.Stages[index].Node}";

        private void Report(int token, GeneratedTokens ids) =>
            Request.ProgressTo?.Tell(new GenerationProgress(Request.RequestId, BlockIndex, Blocks.Count, token, Block.ExecuteGenLen, _clock.Now, ids));
    }
}
