namespace FlexGen.Actors.Actors;

using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Policies;

/// <summary>
/// Owns the policy, the model backend (weights placed in their tiers) and the tier actors (its children:
/// gpu-compute, cpu-compute, copy, disk-io, each on its own pinned dispatcher). Turns each
/// <see cref="GenerateRequest"/> into blocks of gpu_batch_size * num_gpu_batches rows and drives each block's
/// schedule through the tier actors (<see cref="BlockDispatcher"/> decides what may start), one request at
/// a time. Runs on its own pinned dispatcher (<see cref="FlexGenHocon.CoordinatorDispatcher"/>): preparing or freeing a
/// run and freeing a model block its thread; a model is loaded off it (a <see cref="CancelGeneration"/> can stop the load). Replies <see cref="GenerationResult"/>, or <see cref="Status.Failure"/> with a
/// <see cref="GenerationFailedException"/> whose inner exception is the cause.
/// <para>
/// Ownership: the backend (weights) belongs to this actor and is disposed in PostStop or when a request
/// brings another policy; each block's run owns its cache, buffers and offload files and is disposed by
/// this actor as soon as no tier actor can still touch it (all parts answered) - after success, failure
/// or cancellation alike, before the reply is sent.
/// </para>
/// </summary>
public sealed class GenerationCoordinator : UntypedActor
{
    private readonly Func<Policy, CancellationToken, IPipelineBackend> _backendFactory;
    private readonly Func<PipelineActorKind, Props> _tierProps;
    private readonly Policy _defaultPolicy;
    private readonly PipelineSettings _options;
    private readonly Dictionary<PipelineActorKind, IActorRef> _tiers = new();
    private readonly RunRegistry _runs = new();
    private readonly LinkedList<(GenerateRequest Request, IActorRef ReplyTo)> _queue = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IPipelineBackend? _backend;
    private RequestExecution? _current;
    private ModelLoad? _loading;

    public GenerationCoordinator(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options, Func<PipelineActorKind, Props>? tierProps = null)
        : this(defaultPolicy, (policy, _) => backendFactory(policy), options, tierProps)
    {
    }

    /// <summary>
    /// A coordinator whose <paramref name="backendFactory"/> loads a model off the actor's thread and gives up (throws
    /// <see cref="OperationCanceledException"/>, having freed what it loaded) when its token is signalled: a
    /// <see cref="CancelGeneration"/> of the request that needs the model signals it.
    /// </summary>
    public GenerationCoordinator(Policy defaultPolicy, Func<Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options, Func<PipelineActorKind, Props>? tierProps = null)
    {
        _defaultPolicy = defaultPolicy;
        _backendFactory = backendFactory;
        _tierProps = tierProps ?? (kind => PipelineActor.PropsFor(kind, _runs));
        _options = options ?? PipelineSettings.FromConfig(Context.System.Settings.Config);
    }

    /// <summary>
    /// Props for a coordinator whose backend is built by <paramref name="backendFactory"/> for each policy in use;
    /// <paramref name="options"/> null: flexgen.pipeline from the actor system's config (hocon/flexgen.conf).
    /// </summary>
    public static Props Props(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options = null) =>
        Akka.Actor.Props.Create(() => new GenerationCoordinator(defaultPolicy, backendFactory, options, null)).WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    /// <summary>
    /// As <see cref="Props(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?)"/> with a factory that stops loading
    /// when its token is signalled (a request cancelled while its model loads).
    /// </summary>
    public static Props Props(Policy defaultPolicy, Func<Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options = null) =>
        Akka.Actor.Props.Create(() => new GenerationCoordinator(defaultPolicy, backendFactory, options, null)).WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    /// <summary>
    /// As <see cref="Props(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?)"/> with other tier actors (tests put
    /// probes there): <paramref name="tierProps"/> gives the props of each tier's child. They receive
    /// <see cref="ExecuteTask"/> and must answer <see cref="TaskCompleted"/> (or <see cref="TaskSkipped"/>).
    /// </summary>
    public static Props PropsWithTiers(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options, Func<PipelineActorKind, Props> tierProps) =>
        Akka.Actor.Props.Create(() => new GenerationCoordinator(defaultPolicy, backendFactory, options, tierProps)).WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    /// <summary>
    /// Props for a coordinator over the real backend: the model of <paramref name="settings"/> is loaded (weights into
    /// their tiers) for settings.Policy when the first request arrives, and again when a request brings another policy.
    /// </summary>
    public static Props Props(Engine.EngineSettings settings) =>
        Props(settings.Policy, (policy, cancellationToken) => Engine.TorchPipelineBackend.Create(settings, policy, cancellationToken: cancellationToken), settings.Pipeline);

    /// <summary>The tier actors' child names.</summary>
    public static string ChildName(PipelineActorKind tier) => tier.ActorName();

    /// <summary>
    /// Supervision: a tier actor whose task part throws (<see cref="TierTaskException"/>) fails the running
    /// request with the part's exception as the cause and is restarted (it holds no state; queued parts of the
    /// abandoned run are skipped). Any other failure of a tier actor stops it; the coordinator watches its
    /// tiers, fails the running request on <see cref="Terminated"/> and starts a fresh actor for that tier.
    /// </summary>
    protected override SupervisorStrategy SupervisorStrategy() =>
        new OneForOneStrategy(-1, -1, cause =>
        {
            if (cause is TierTaskException partFailed)
            {
                OnPartFailed(partFailed);
                return Directive.Restart;
            }

            _log.Error(cause, "tier actor failed outside a task part; stopping it");
            return Directive.Stop;
        });

    protected override void PreStart()
    {
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            StartTier(tier);
        }
    }

    /// <summary>
    /// Akka's default stops the children and calls PostStop at once, while a tier actor may still run a part of the
    /// current run: PostStop would dispose the run and the backend under it. Here the running request is cancelled,
    /// the tier actors are stopped and waited for (each finishes at most the part it runs; they are on their own
    /// threads, so blocking this one is safe) and only then PostStop frees everything. Should a tier not stop within
    /// <see cref="RestartStopTimeout"/>, the run and the backend are left undisposed (leaked) rather than freed under it.
    /// </summary>
    protected override void PreRestart(Exception reason, object message)
    {
        _current?.Run?.Cancel();
        var stopped = new List<Task>();
        foreach (var child in Context.GetChildren())
        {
            Context.Unwatch(child);
            stopped.Add(child.WatchAsync());
            Context.Stop(child);
        }

        if (!Task.WaitAll(stopped.ToArray(), RestartStopTimeout))
        {
            _log.Error(reason, "tier actors did not stop within {0} of the coordinator's restart: its run and model are not freed", RestartStopTimeout);
            if (_current is { } current)
            {
                current.Run = null;
            }

            _backend = null;
        }

        PostStop();
    }

    private static readonly TimeSpan RestartStopTimeout = TimeSpan.FromSeconds(60);

    protected override void PostStop()
    {
        // Children (tier actors) have stopped before PostStop: nothing can touch a run any more.
        if (_current is { } current)
        {
            current.Cause ??= new OperationCanceledException("the generation coordinator stopped");
            FinishFailed(current);
        }

        foreach (var (request, replyTo) in _queue)
        {
            replyTo.Tell(new Status.Failure(new GenerationFailedException(request.RequestId, "the generation coordinator stopped",
                new OperationCanceledException("the generation coordinator stopped"))));
        }

        _queue.Clear();
        if (_loading is { } loading)
        {
            // The load cannot be waited for here: stop it, and free the model should it still finish.
            _loading = null;
            loading.Cancellation.Cancel();
            loading.Loaded.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            loading.ReplyTo.Tell(new Status.Failure(new GenerationFailedException(loading.Request.RequestId, "the generation coordinator stopped",
                new OperationCanceledException("the generation coordinator stopped"))));
        }

        _backend?.Dispose();
        _backend = null;
    }

    protected override void OnReceive(object message)
    {
        switch (message)
        {
            case GenerateRequest request:
                _queue.AddLast((request, Sender));
                StartNextIfIdle();
                break;
            case CancelGeneration cancel:
                Cancel(cancel.RequestId);
                break;
            case ModelLoaded loaded when ReferenceEquals(loaded.Load, _loading):
                OnModelLoaded(loaded.Load, loaded.Backend, null);
                break;
            case ModelLoadFailed failed when ReferenceEquals(failed.Load, _loading):
                OnModelLoaded(failed.Load, null, failed.Cause);
                break;
            case TaskCompleted completed when IsCurrent(completed.Run):
                OnCompleted(completed);
                break;
            case TaskSkipped skipped when IsCurrent(skipped.Run):
                _current!.Dispatcher!.Abandon(skipped.Actor);
                FinishAbortIfDrained();
                break;
            case ModelLoaded stale:
                stale.Backend.Dispose(); // cannot happen while the load is tracked; frees the model all the same
                break;
            case ModelLoadFailed:
                break;
            case TaskCompleted or TaskSkipped:
                break; // a part of a run already disposed: nothing to do
            case Terminated terminated:
                OnTierTerminated(terminated.ActorRef);
                break;
            default:
                Unhandled(message);
                break;
        }
    }

    private void StartTier(PipelineActorKind tier)
    {
        var actor = Context.ActorOf(_tierProps(tier), ChildName(tier));
        Context.Watch(actor);
        _tiers[tier] = actor;
    }

    private bool IsCurrent(RunId run) => _current?.Run is { } current && current.Id == run;

    private void OnTierTerminated(IActorRef actor)
    {
        var tier = _tiers.First(t => t.Value.Equals(actor)).Key;
        if (_current?.Dispatcher is { } dispatcher)
        {
            dispatcher.AbandonAll(tier);
        }

        StartTier(tier);
        Abort(new InvalidOperationException($"tier actor {tier.ActorName()} stopped"));
        FinishAbortIfDrained();
    }

    private void OnPartFailed(TierTaskException failure)
    {
        if (!IsCurrent(failure.Run))
        {
            return;
        }

        _current!.Dispatcher!.Abandon(failure.Actor);
        Abort(failure.InnerException ?? failure);

        // Abort does nothing when the request was already aborting (cancelled, or another part failed): this part may
        // have been the last one in flight, and no other answer will come to finish the request.
        FinishAbortIfDrained();
    }

    private void Cancel(Guid requestId)
    {
        if (_loading is { } loading && loading.Request.RequestId == requestId)
        {
            // Answered once the load has given up and freed what it loaded (OnModelLoaded).
            loading.Cancelled = true;
            loading.Cancellation.Cancel();
            return;
        }

        if (_current?.Request.RequestId == requestId)
        {
            Abort(new OperationCanceledException($"request {requestId} was cancelled"));
            return;
        }

        var queued = _queue.FirstOrDefault(q => q.Request.RequestId == requestId);
        if (queued.Request is not null)
        {
            _queue.Remove(queued);
            queued.ReplyTo.Tell(new Status.Failure(new GenerationFailedException(requestId, $"request {requestId} was cancelled before it started",
                new OperationCanceledException($"request {requestId} was cancelled"))));
        }
    }

    private void StartNextIfIdle()
    {
        while (_current is null && _loading is null && _queue.First is { } next)
        {
            _queue.RemoveFirst();
            var (request, replyTo) = next.Value;
            try
            {
                RequestBlocks.Validate(request); // before a model is (re)loaded for it
                var policy = request.Policy ?? _defaultPolicy;
                if (_backend is null || _backend.Policy != policy)
                {
                    _backend?.Dispose();
                    _backend = null;
                    StartLoad(request, replyTo, policy);
                    return;
                }

                Begin(request, replyTo);
            }
            catch (Exception e)
            {
                FailStart(request, replyTo, e);
            }
        }
    }

    /// <summary>
    /// Loads the model for <paramref name="policy"/> off this actor (its thread stays free for a
    /// <see cref="CancelGeneration"/>); the outcome comes back as <see cref="ModelLoaded"/> or <see cref="ModelLoadFailed"/>.
    /// </summary>
    private void StartLoad(GenerateRequest request, IActorRef replyTo, Policy policy)
    {
        var cancellation = new CancellationTokenSource();
        var factory = _backendFactory;
        var loaded = Task.Run(() => factory(policy, cancellation.Token), CancellationToken.None);
        var load = new ModelLoad(request, replyTo, cancellation, loaded);
        _loading = load;
        loaded.PipeTo(Self, success: backend => new ModelLoaded(load, backend), failure: e => new ModelLoadFailed(load, e));
    }

    private void OnModelLoaded(ModelLoad load, IPipelineBackend? backend, Exception? cause)
    {
        _loading = null;
        load.Cancellation.Dispose();
        if (load.Cancelled)
        {
            // Cancelled while loading: a model that loaded all the same is freed too (the next request reloads it).
            Dispose(backend);
            var cancelled = new OperationCanceledException($"request {load.Request.RequestId} was cancelled while its model loaded");
            load.ReplyTo.Tell(new Status.Failure(new GenerationFailedException(load.Request.RequestId, $"request {load.Request.RequestId} failed: {cancelled.Message}", cancelled)));
        }
        else if (backend is null)
        {
            var error = cause is AggregateException { InnerExceptions.Count: 1 } single ? single.InnerException! : cause!;
            FailStart(load.Request, load.ReplyTo, error);
        }
        else
        {
            _backend = backend;
            try
            {
                Begin(load.Request, load.ReplyTo);
            }
            catch (Exception e)
            {
                FailStart(load.Request, load.ReplyTo, e);
            }
        }

        StartNextIfIdle();
    }

    private void Dispose(IPipelineBackend? backend)
    {
        try
        {
            backend?.Dispose();
        }
        catch (Exception e)
        {
            _log.Error(e, "disposing a model loaded for a cancelled request failed");
        }
    }

    private void Begin(GenerateRequest request, IActorRef replyTo)
    {
        var blocks = RequestBlocks.Split(request, _backend!.Policy, _backend.PadTokenId);
        _backend.ResetPeaks();
        _current = new RequestExecution(request, replyTo, blocks, new TraceRecorder());
        StartBlock(_current);
    }

    private void FailStart(GenerateRequest request, IActorRef replyTo, Exception e)
    {
        if (_current is { } failed)
        {
            failed.Cause = e;
            FinishFailed(failed);
        }
        else
        {
            replyTo.Tell(new Status.Failure(new GenerationFailedException(request.RequestId, $"request {request.RequestId} failed: {e.Message}", e)));
        }
    }

    private void StartBlock(RequestExecution current)
    {
        var block = current.Blocks[current.BlockIndex];
        var plan = _backend!.Plan(block);
        current.Run = _backend.CreateRun(new RunId(current.Request.RequestId, current.BlockIndex), block, plan, current.Trace);
        _runs.Add(current.Run);
        current.Plan = plan;
        current.Dispatcher = new BlockDispatcher(plan.Schedule, plan.Route, _options.MaxInFlightPerTier, _options.PrefetchSteps);
        current.BlockStarted = current.Trace.Now;
        current.PrefillTasksLeft = plan.Schedule.Tasks.Count(t => t.Task.Token == 0);
        current.TokensRun = block.ExecuteGenLen;
        current.TasksLeftPerToken = new int[block.ExecuteGenLen];
        foreach (var scheduled in plan.Schedule.Tasks)
        {
            if (scheduled.Task.Token < block.ExecuteGenLen)
            {
                current.TasksLeftPerToken[scheduled.Task.Token]++;
            }
        }

        current.TokensReported = 0;
        Dispatch(current);
    }

    private void Dispatch(RequestExecution current)
    {
        foreach (var (task, tier) in current.Dispatcher!.TakeReady())
        {
            _tiers[tier].Tell(new ExecuteTask(current.Run!.Id, task, tier));
        }
    }

    private void OnCompleted(TaskCompleted completed)
    {
        var current = _current!;
        var dispatcher = current.Dispatcher!;
        dispatcher.Complete(completed.Task, completed.Actor);
        if (current.Cause is not null)
        {
            FinishAbortIfDrained();
            return;
        }

        if (completed.Task.Token == 0 && dispatcher.IsDone(completed.Task) && --current.PrefillTasksLeft == 0)
        {
            current.Prefill += current.Trace.Now - current.BlockStarted;
            current.PrefillEnded = current.Trace.Now;
        }

        if (dispatcher.IsDone(completed.Task) && completed.Task.Token < current.TokensRun)
        {
            current.TasksLeftPerToken[completed.Task.Token]--;
            ReportTokensDone(current);
        }

        if (!current.StopApplied && completed.StoppedAfterToken is { } stoppedAfter)
        {
            // Every sequence of the block emitted the stop token: its later positions stay pads (FlexGen breaks here too).
            current.StopApplied = true;
            dispatcher.DropAfterToken(stoppedAfter);
        }

        if (!dispatcher.IsFinished)
        {
            Dispatch(current);
            return;
        }

        try
        {
            FinishBlock(current);
        }
        catch (Exception e)
        {
            Abort(e);
        }
    }

    private void FinishBlock(RequestExecution current)
    {
        var run = current.Run!;
        var now = current.Trace.Now;
        current.Decode += now - (current.PrefillEnded ?? now);
        if (current.TokensReported < current.TokensRun)
        {
            // A stop token ended the block early: its remaining tokens are pads, and the block is complete.
            current.TokensReported = current.TokensRun;
            ReportProgress(current);
        }

        var ids = run.OutputIds();
        for (int row = 0; row < run.Block.ValidRows; row++)
        {
            current.Outputs.Add(ids[row]);
        }

        current.Run = null;
        current.Plan = null;
        current.Dispatcher = null;
        current.PrefillEnded = null;
        current.StopApplied = false;
        _runs.Remove(run.Id);
        run.Dispose();
        if (++current.BlockIndex < current.Blocks.Count)
        {
            StartBlock(current);
            return;
        }

        var result = new GenerationResult(current.Request.RequestId, current.Outputs.ToArray(),
            new PhaseTimings(current.Prefill, current.Decode), new Dictionary<string, long>(_backend!.PeakBytes), current.Trace.ToTrace());
        _current = null;
        current.ReplyTo.Tell(result);
        StartNextIfIdle();
    }

    /// <summary>Reports each token, in order, whose tasks are all done (tasks of later tokens may finish first).</summary>
    private void ReportTokensDone(RequestExecution current)
    {
        while (current.TokensReported < current.TokensRun && current.TasksLeftPerToken[current.TokensReported] == 0)
        {
            current.TokensReported++;
            ReportProgress(current);
        }
    }

    private void ReportProgress(RequestExecution current)
    {
        if (current.Request.Progress is not { } progress)
        {
            return;
        }

        try
        {
            progress.Report(new GenerationProgress(current.Request.RequestId, current.BlockIndex, current.Blocks.Count,
                current.TokensReported, current.TokensRun, current.Trace.Now));
        }
        catch (Exception e)
        {
            _log.Warning("the progress observer of request {0} threw: {1}", current.Request.RequestId, e.Message);
        }
    }

    private void Abort(Exception cause)
    {
        if (_current is not { } current || current.Cause is not null)
        {
            return;
        }

        current.Cause = cause;
        current.Run?.Cancel();
        FinishAbortIfDrained();
    }

    private void FinishAbortIfDrained()
    {
        if (_current is not { Cause: not null } current || current.Dispatcher is { InFlight: > 0 })
        {
            return;
        }

        FinishFailed(current);
        StartNextIfIdle();
    }

    private void FinishFailed(RequestExecution current)
    {
        try
        {
            if (current.Run is { } run)
            {
                _runs.Remove(run.Id);
                run.Dispose();
            }
        }
        catch (Exception e)
        {
            _log.Error(e, "disposing the run of request {0} failed", current.Request.RequestId);
        }

        current.Run = null;
        current.Dispatcher = null;
        _current = null;
        var cause = current.Cause!;
        current.ReplyTo.Tell(new Status.Failure(new GenerationFailedException(current.Request.RequestId,
            $"request {current.Request.RequestId} failed: {cause.Message}", cause)));
    }

    /// <summary>A model being loaded for <paramref name="Request"/> (the only request started until it is loaded).</summary>
    private sealed class ModelLoad(GenerateRequest request, IActorRef replyTo, CancellationTokenSource cancellation, Task<IPipelineBackend> loaded)
    {
        public GenerateRequest Request { get; } = request;

        public IActorRef ReplyTo { get; } = replyTo;

        public CancellationTokenSource Cancellation { get; } = cancellation;

        public Task<IPipelineBackend> Loaded { get; } = loaded;

        /// <summary>The request was cancelled while its model loaded.</summary>
        public bool Cancelled { get; set; }
    }

    private sealed record ModelLoaded(ModelLoad Load, IPipelineBackend Backend);

    private sealed record ModelLoadFailed(ModelLoad Load, Exception Cause);

    private sealed class RequestExecution(GenerateRequest request, IActorRef replyTo, IReadOnlyList<BlockRequest> blocks, TraceRecorder trace)
    {
        public GenerateRequest Request { get; } = request;

        public IActorRef ReplyTo { get; } = replyTo;

        public IReadOnlyList<BlockRequest> Blocks { get; } = blocks;

        public TraceRecorder Trace { get; } = trace;

        public List<IReadOnlyList<long>> Outputs { get; } = new();

        public int BlockIndex { get; set; }

        public IPipelineRun? Run { get; set; }

        public BlockPlan? Plan { get; set; }

        public BlockDispatcher? Dispatcher { get; set; }

        public Exception? Cause { get; set; }

        public TimeSpan BlockStarted { get; set; }

        public TimeSpan? PrefillEnded { get; set; }

        public int PrefillTasksLeft { get; set; }

        /// <summary>The current block's tokens to run (cut_gen_len or gen_len).</summary>
        public int TokensRun { get; set; }

        /// <summary>Per token of the current block: its tasks not yet done.</summary>
        public int[] TasksLeftPerToken { get; set; } = [];

        /// <summary>The current block's tokens reported done (a prefix: tokens are reported in order).</summary>
        public int TokensReported { get; set; }

        /// <summary>The current block's tokens after its stop were left out.</summary>
        public bool StopApplied { get; set; }

        public TimeSpan Prefill { get; set; }

        public TimeSpan Decode { get; set; }
    }
}
