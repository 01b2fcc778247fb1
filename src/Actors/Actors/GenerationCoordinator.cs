namespace FlexGen.Actors.Actors;

using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Actors.Coordination;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors;
using FlexGen.Tensors.Policies;

/// <summary>
/// Owns the policy, the model backend (weights placed in their tiers), the one queue of requests and the tier actors
/// (its children: gpu-compute, cpu-compute, copy, disk-io, each on its own pinned dispatcher). Turns each
/// <see cref="GenerateRequest"/> into blocks of gpu_batch_size * num_gpu_batches rows and drives each block's
/// schedule through the tier actors (<see cref="BlockDispatcher"/> decides what may start), one request at a time, in
/// explicit states (GenerationCoordinator.States.cs): idle, loading a model (off this actor's thread; a
/// <see cref="CancelGeneration"/> stops the load), running a block, draining (a failed or cancelled request waits for
/// its parts in flight before its run is freed). Runs on its own pinned dispatcher
/// (<see cref="FlexGenHocon.CoordinatorDispatcher"/>): preparing and freeing a run block its thread. Replies
/// <see cref="GenerationResult"/>, or <see cref="Status.Failure"/> with a <see cref="GenerationFailedException"/> whose
/// inner exception is the cause.
/// <para>
/// Ownership: the backend (weights) belongs to this actor and is disposed in PostStop or when a request brings
/// another policy; each block's run owns its cache, buffers and offload files and is disposed by this actor as soon as
/// no tier actor can still touch it (all parts answered) - after success, failure or cancellation alike, before the
/// reply is sent.
/// </para>
/// </summary>
public sealed partial class GenerationCoordinator : UntypedActor
{
    private readonly Func<Policy, CancellationToken, IPipelineBackend> _backendFactory;
    private readonly Func<PipelineActorKind, RunRegistry, Props> _tierProps;
    private readonly Policy _defaultPolicy;
    private readonly PipelineSettings _options;
    private readonly Dictionary<PipelineActorKind, IActorRef> _tiers = new();
    private readonly RunRegistry _runs = new();
    private readonly PendingRequests _pending = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IPipelineBackend? _backend;

    /// <summary>
    /// A coordinator whose <paramref name="backendFactory"/> loads a model off the actor's thread and gives up (throws
    /// <see cref="OperationCanceledException"/>, having freed what it loaded) when its token is signalled: a
    /// <see cref="CancelGeneration"/> of the request that needs the model signals it. <paramref name="tierProps"/> null:
    /// the pipeline actors of <see cref="PipelineActor.PropsFor"/>.
    /// </summary>
    public GenerationCoordinator(Policy defaultPolicy, Func<Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options,
        Func<PipelineActorKind, RunRegistry, Props>? tierProps = null)
    {
        _defaultPolicy = defaultPolicy;
        _backendFactory = backendFactory;
        _tierProps = tierProps ?? ((kind, runs) => PipelineActor.PropsFor(kind, runs));
        _options = options ?? PipelineSettings.FromConfig(Context.System.Settings.Config);
    }

    /// <summary>
    /// Props for a coordinator whose backend is built by <paramref name="backendFactory"/> for each policy in use;
    /// <paramref name="options"/> null: flexgen.pipeline from the actor system's config (hocon/flexgen.conf).
    /// </summary>
    public static Props Props(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options = null) =>
        Props(defaultPolicy, (policy, _) => backendFactory(policy), options);

    /// <summary>
    /// As <see cref="Props(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?)"/> with a factory that stops loading
    /// when its token is signalled (a request cancelled while its model loads).
    /// </summary>
    public static Props Props(Policy defaultPolicy, Func<Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options = null) =>
        Akka.Actor.Props.Create(() => new GenerationCoordinator(defaultPolicy, backendFactory, options, null)).WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    /// <summary>
    /// As <see cref="Props(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?)"/> with other tier actors (tests put
    /// probes or instrumented pipeline actors there): <paramref name="tierProps"/> gives the props of each tier's child,
    /// given the registry the coordinator keeps its runs in. They receive <see cref="ExecuteTask"/> and must answer
    /// <see cref="TaskCompleted"/>, <see cref="TaskSkipped"/> or <see cref="TaskFailed"/>.
    /// </summary>
    public static Props PropsWithTiers(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options,
        Func<PipelineActorKind, RunRegistry, Props> tierProps) =>
        Akka.Actor.Props.Create(() => new GenerationCoordinator(defaultPolicy, (policy, _) => backendFactory(policy), options, tierProps))
            .WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    /// <summary>
    /// Props for a coordinator over the real backend: the model of <paramref name="settings"/> is loaded (weights into
    /// their tiers) for settings.Policy when the first request arrives, and again when a request brings another policy.
    /// </summary>
    public static Props Props(Engine.EngineSettings settings) =>
        Props(settings.Policy, (policy, cancellationToken) => Engine.TorchPipelineBackend.Create(settings, policy, cancellationToken: cancellationToken), settings.Pipeline);

    /// <summary>The tier actors' child names.</summary>
    public static string ChildName(PipelineActorKind tier) => tier.ActorName();

    /// <summary>
    /// Supervision decides only the child's fate: a failed part comes back as <see cref="TaskFailed"/>, so a tier actor
    /// that fails at all failed outside a part and is stopped; the coordinator watches its tiers, starts a fresh actor
    /// on <see cref="Terminated"/> and fails the running request then.
    /// </summary>
    protected override SupervisorStrategy SupervisorStrategy() =>
        new OneForOneStrategy(-1, -1, cause =>
        {
            _log.Error(cause, "a tier actor failed outside a task part; stopping it");
            return Directive.Stop;
        });

    protected override void PreStart()
    {
        // The coordinator allocates and fills each block's cache homes: serially, so it makes no OpenMP team to
        // throttle the compute's (OpenMpTeams).
        OpenMpTeams.KeepSerial();
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            StartTier(tier);
        }
    }

    /// <summary>
    /// Akka's default stops the children and calls PostStop at once, while a tier actor may still run a part of the
    /// current run: PostStop would dispose the run and the backend under it. Here the current run is cancelled and the
    /// tier actors are stopped; the run, the backend and the reply go to a continuation that runs once every tier actor
    /// has stopped (each finishes at most the part it runs). Nothing blocks this thread.
    /// </summary>
    protected override void PreRestart(Exception reason, object message)
    {
        var stopped = new List<Task>();
        foreach (var child in Context.GetChildren())
        {
            Context.Unwatch(child);
            stopped.Add(child.WatchAsync());
            Context.Stop(child);
        }

        var release = Detach("the generation coordinator restarted");
        Task.WhenAll(stopped).ContinueWith(_ => release(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    /// <summary>Children (tier actors) have stopped before PostStop: nothing can touch a run any more.</summary>
    protected override void PostStop() => Detach("the generation coordinator stopped")();

    /// <summary>
    /// Takes everything this actor owns out of it: queued requests are failed now, a load is abandoned (its model freed
    /// when it finishes), the current run is cancelled. Returns what frees the run and the backend and fails the
    /// request they served: to be called once no tier actor can touch them.
    /// </summary>
    private Action Detach(string why)
    {
        var stopped = new OperationCanceledException(why);
        foreach (var pending in _pending.TakeAll())
        {
            pending.ReplyTo.Tell(Failure(pending.Request.RequestId, stopped));
        }

        var state = _state;
        var backend = _backend;
        var runs = _runs;
        var log = _log;
        _state = IdleState.Instance;
        _backend = null;
        var execution = state switch
        {
            RunningState running => running.Execution,
            DrainingState draining => draining.Execution,
            _ => null,
        };
        execution?.Block?.Run.Cancel();
        if (state is LoadingState loading)
        {
            loading.Load.Abandon();
            loading.Load.ReplyTo.Tell(Failure(loading.Load.Request.RequestId, stopped));
        }

        return () =>
        {
            try
            {
                execution?.FreeBlock(runs);
                backend?.Dispose();
            }
            catch (Exception e)
            {
                log.Error(e, "freeing the run or the model failed: {0}", why);
            }

            execution?.ReplyTo.Tell(Failure(execution.Request.RequestId, stopped));
        };
    }

    private void StartTier(PipelineActorKind tier)
    {
        var actor = Context.ActorOf(_tierProps(tier, _runs), ChildName(tier));
        Context.Watch(actor);
        _tiers[tier] = actor;
    }

    /// <summary>Starts a fresh actor for the tier whose actor stopped; returns that tier.</summary>
    private PipelineActorKind ReplaceTier(IActorRef stopped)
    {
        var tier = _tiers.First(t => t.Value.Equals(stopped)).Key;
        StartTier(tier);
        return tier;
    }

    private static Status.Failure Failure(Guid requestId, Exception cause) =>
        new(new GenerationFailedException(requestId, $"request {requestId} failed: {cause.Message}", cause));
}
