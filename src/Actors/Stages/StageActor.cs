namespace FlexGen.Actors.Stages;

using System.Collections.Immutable;
using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Actors.Coordination;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Policies;

/// <summary>
/// One node's stage of a pipeline over several nodes (the stage protocol, StageProtocol.cs): owns the backend of its
/// layer range (weights in its tiers under its own policy, its offload folder), the tier actors (its children, as the
/// <see cref="GenerationCoordinator"/>'s) and the block running here. Each block's parts go through the same
/// <see cref="BlockDispatcher"/> and block schedule as on one node; the inputs of its first layer arrive as
/// <see cref="StageInput"/>s and its last layer's outputs leave as such. Runs on the coordinator's pinned dispatcher
/// (loading weights and preparing a run block its thread).
/// <para>
/// Ownership: the backend is freed on <see cref="ReleaseStage"/>, on the next <see cref="LoadStage"/>, when the
/// coordinating node's actor is gone, and in PostStop; a block's run is freed once no tier actor can touch it, before
/// the stage answers <see cref="StageBlockDone"/>, <see cref="StageBlockFailed"/> or <see cref="StageBlockAborted"/>.
/// </para>
/// </summary>
public sealed class StageActor : UntypedActor
{
    /// <summary>The name every node gives its stage actor (under /user), so the coordinator finds it by address.</summary>
    public const string Name = "flexgen-stage";

    private readonly Policy _policy;
    private readonly long? _capacityBytes;
    private readonly Func<LoadStage, Policy, CancellationToken, IPipelineBackend> _backendFactory;
    private readonly PipelineSettings _options;
    private readonly Dictionary<PipelineActorKind, IActorRef> _tiers = new();
    private readonly RunRegistry _runs = new();
    private readonly Dictionary<RunId, List<StageTensor>> _early = new(); // inputs that came before their block
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IPipelineBackend? _backend;
    private LoadStage? _loaded;
    private IActorRef? _coordinator;
    private StageBlock? _block;
    private bool _freeBackendAfterBlock;

    /// <param name="policy">The policy this node's layers run under.</param>
    /// <param name="capacityBytes">What its tiers' budgets allow in all (null: no budget set), for the plan.</param>
    /// <param name="backendFactory">Loads a layer range of a model under the policy (throws, having freed what it loaded).</param>
    public StageActor(Policy policy, long? capacityBytes, Func<LoadStage, Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options)
    {
        _policy = policy;
        _capacityBytes = capacityBytes;
        _backendFactory = backendFactory;
        _options = options ?? PipelineSettings.FromConfig(Context.System.Settings.Config);
    }

    public static Props Props(Policy policy, long? capacityBytes, Func<LoadStage, Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options = null) =>
        Akka.Actor.Props.Create(() => new StageActor(policy, capacityBytes, backendFactory, options)).WithDispatcher(FlexGenHocon.CoordinatorDispatcher);

    private string Node => ((ExtendedActorSystem)Context.System).Provider.DefaultAddress.ToString();

    private long MaxFrameBytes => Context.System.Settings.Config.GetByteSize("akka.remote.dot-netty.tcp.maximum-frame-size") ?? 0;

    /// <summary>A tier actor that fails outside a part is stopped; its Terminated fails the block (see <see cref="GenerationCoordinator"/>).</summary>
    protected override SupervisorStrategy SupervisorStrategy() => new OneForOneStrategy(-1, -1, cause =>
    {
        _log.Error(cause, "a tier actor failed outside a task part; stopping it");
        return Directive.Stop;
    });

    protected override void PreStart()
    {
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            StartTier(tier);
        }
    }

    /// <summary>The tier actors (children) have stopped: nothing can touch the block's run any more.</summary>
    protected override void PostStop()
    {
        FreeBlock();
        FreeBackend();
    }

    protected override void OnReceive(object message)
    {
        switch (message)
        {
            case DescribeStage:
                Sender.Tell(new StageDescription(Node, _policy, _capacityBytes, MaxFrameBytes));
                break;
            case LoadStage load:
                Load(load);
                break;
            case RunStageBlock run:
                Start(run);
                break;
            case StageInput input:
                Deliver(input);
                break;
            case StopStageAfter stop when _block is { } block && block.Command.Run == stop.Run:
                block.Execution.StopAfter(stop.Token);
                Continue(block);
                break;
            case TaskCompleted completed when _block is { } block && block.Run.Id == completed.Run:
                OnCompleted(block, completed);
                break;
            case TaskFailed failed when _block is { } block && block.Run.Id == failed.Run:
                block.Execution.Dispatcher.Abandon(failed.Actor);
                Fail(block, $"{failed.Task} failed on {failed.Actor.ActorName()}: {failed.Cause.Message}");
                break;
            case TaskSkipped skipped when _block is { } block && block.Run.Id == skipped.Run:
                block.Execution.Dispatcher.Abandon(skipped.Actor);
                Fail(block, $"{skipped.Actor.ActorName()} skipped {skipped.Task}");
                break;
            case AbortStageBlock abort:
                Abort(abort.Run);
                break;
            case ReleaseStage release when _loaded?.PipelineId == release.PipelineId:
                AbortCurrent();
                FreeBackend();
                break;
            case ReleaseStage:
                break; // a pipeline already released or replaced
            case Terminated terminated when _tiers.ContainsValue(terminated.ActorRef):
                var tier = _tiers.First(t => t.Value.Equals(terminated.ActorRef)).Key;
                StartTier(tier);
                if (_block is { } running)
                {
                    running.Execution.Dispatcher.AbandonAll(tier);
                    Fail(running, $"tier actor {tier.ActorName()} stopped");
                }

                break;
            case Terminated terminated when terminated.ActorRef.Equals(_coordinator):
                // The coordinating node is gone: nothing will ask for this pipeline again.
                _log.Warning("the pipeline coordinator {0} is gone; freeing this stage", terminated.ActorRef.Path);
                AbortCurrent();
                FreeBackend();
                break;
            case TaskCompleted or TaskFailed or TaskSkipped or StopStageAfter or Terminated:
                break; // about a block already gone
            default:
                Unhandled(message);
                break;
        }
    }

    private void Load(LoadStage load)
    {
        AbortCurrent();
        FreeBackend();
        WatchCoordinator(Sender);
        if (_block is not null)
        {
            Sender.Tell(new StageLoadFailed(load.PipelineId, load.Index, Node, $"stage still frees block {_block.Run.Id}; try again"));
            return;
        }

        try
        {
            _backend = _backendFactory(load, _policy, CancellationToken.None);
            _loaded = load;
            Sender.Tell(new StageLoaded(load.PipelineId, load.Index, Node));
        }
        catch (Exception e)
        {
            _log.Error(e, "stage {0} could not load {1}", load.Index, load.Layers);
            Sender.Tell(new StageLoadFailed(load.PipelineId, load.Index, Node, e.Message));
        }
    }

    private void Start(RunStageBlock command)
    {
        if (_backend is null || _loaded?.PipelineId != command.PipelineId)
        {
            command.Coordinator.Tell(new StageBlockFailed(command.Run, command.Index, Node,
                $"stage {command.Index} has not loaded the layers of pipeline {command.PipelineId}"));
            return;
        }

        if (_block is not null)
        {
            command.Coordinator.Tell(new StageBlockFailed(command.Run, command.Index, Node, $"stage {command.Index} still runs {_block.Run.Id}"));
            return;
        }

        WatchCoordinator(command.Coordinator);
        try
        {
            _backend.ResetPeaks();
            var trace = new TraceRecorder();
            var execution = BlockExecution.Start(command.Run.Block, command.Block, command.Run, _backend, _runs, trace, _options);
            _block = new StageBlock(command, execution, trace);
        }
        catch (Exception e)
        {
            command.Coordinator.Tell(new StageBlockFailed(command.Run, command.Index, Node, e.Message));
            return;
        }

        if (_early.Remove(command.Run, out var arrived))
        {
            arrived.ForEach(input => Accept(_block, input));
        }

        Continue(_block);
    }

    private void Deliver(StageInput input)
    {
        if (_block is { } block && block.Run.Id == input.Run)
        {
            Accept(block, input.Input);
            Continue(block);
            return;
        }

        if (_block is { Aborting: true } || _backend is null)
        {
            return; // for a block that is ending, or a stage that was released
        }

        // Another stage can be faster than the coordinator's RunStageBlock to this one.
        if (!_early.TryGetValue(input.Run, out var list))
        {
            _early[input.Run] = list = new List<StageTensor>();
        }

        list.Add(input.Input);
    }

    private static void Accept(StageBlock block, StageTensor input)
    {
        if (block.Aborting)
        {
            return;
        }

        ((IStageRun)block.Run).Deliver(input);
        block.Execution.Dispatcher.Arrived(BlockSchedule.StageInput(input.Token, input.Batch));
    }

    private void OnCompleted(StageBlock block, TaskCompleted completed)
    {
        if (block.Aborting)
        {
            block.Execution.Dispatcher.Complete(completed.Task, completed.Actor);
            FinishIfDrained(block);
            return;
        }

        try
        {
            block.Execution.Complete(completed, block.Trace.Now);
            SendOutputs(block, completed);
        }
        catch (Exception e)
        {
            Fail(block, e.Message);
            return;
        }

        if (!block.Execution.Dispatcher.IsFinished)
        {
            Continue(block);
            return;
        }

        var command = block.Command;
        var run = block.Run;
        var output = block.LastStage ? run.OutputIds().Take(run.Block.ValidRows).Select(row => row.ToImmutableArray()).ToImmutableArray() : [];
        var done = new StageBlockDone(command.Run, command.Index, output, block.Trace.ToTrace().Events, block.Trace.OriginUtc,
            _backend!.PeakBytes.ToImmutableDictionary());
        FreeBlock();
        command.Coordinator.Tell(done);
    }

    /// <summary>What a finished StoreHidden of the stage's last layer produced goes on: hidden states to the next stage, sampled ids to the first.</summary>
    private static void SendOutputs(StageBlock block, TaskCompleted completed)
    {
        var task = completed.Task;
        var command = block.Command;
        if (task.Kind != TaskKind.StoreHidden || task.Layer != block.LastLayer)
        {
            return;
        }

        if (!block.LastStage)
        {
            command.Next.Tell(new StageInput(command.Run, ((IStageRun)block.Run).TakeOutput(task.Token, task.Batch)));
            return;
        }

        var tokens = completed.Tokens ?? throw new InvalidOperationException($"the last stage's {task} wrote no token ids");
        if (task.Token + 1 < block.Execution.Tokens)
        {
            command.First.Tell(new StageInput(command.Run, new StageTensor(task.Token + 1, task.Batch, TensorPayload.OfIds(tokens.Ids))));
        }

        command.Coordinator.Tell(new StageTokens(command.Run, tokens));
        if (completed.StoppedAfterToken is { } stopped && !block.StopReported)
        {
            block.StopReported = true;
            command.Coordinator.Tell(new StageStopped(command.Run, stopped));
        }
    }

    private void Continue(StageBlock block)
    {
        block.Execution.DispatchReady(_tiers);
    }

    private void Fail(StageBlock block, string reason)
    {
        if (!block.Aborting)
        {
            block.Aborting = true;
            block.FailureReason = reason;
            block.Run.Cancel();
        }

        FinishIfDrained(block);
    }

    private void Abort(RunId run)
    {
        _early.Remove(run);
        if (_block is { } block && block.Run.Id == run)
        {
            block.AbortedBy ??= Sender;
            if (!block.Aborting)
            {
                block.Aborting = true;
                block.Run.Cancel();
            }

            FinishIfDrained(block);
            return;
        }

        Sender.Tell(new StageBlockAborted(run, _loaded?.Index ?? -1));
    }

    /// <summary>Once no part of the ending block is in flight: frees its run and says so.</summary>
    private void FinishIfDrained(StageBlock block)
    {
        if (!ReferenceEquals(_block, block) || block.Execution.Dispatcher.InFlight > 0)
        {
            return;
        }

        FreeBlock();
        if (_freeBackendAfterBlock)
        {
            FreeBackend();
        }

        var command = block.Command;
        if (block.FailureReason is { } reason)
        {
            command.Coordinator.Tell(new StageBlockFailed(command.Run, command.Index, Node, reason));
        }

        block.AbortedBy?.Tell(new StageBlockAborted(command.Run, command.Index));
    }

    /// <summary>Cancels the running block (if any) and frees it once its parts in flight answered (PostStop: the tiers have stopped).</summary>
    private void AbortCurrent()
    {
        _early.Clear();
        if (_block is { } block)
        {
            block.Aborting = true;
            block.Run.Cancel();
            FinishIfDrained(block);
        }
    }

    private void FreeBlock()
    {
        var block = _block;
        _block = null;
        if (block is null)
        {
            return;
        }

        try
        {
            block.Execution.Free(_runs);
        }
        catch (Exception e)
        {
            _log.Error(e, "freeing the run {0} failed", block.Run.Id);
        }
    }

    private void FreeBackend()
    {
        _loaded = null;
        if (_block is not null)
        {
            // A part still runs on the block: the backend goes once the block is freed (FinishIfDrained), or in PostStop.
            _freeBackendAfterBlock = true;
            return;
        }

        var backend = _backend;
        _backend = null;
        _freeBackendAfterBlock = false;
        try
        {
            backend?.Dispose();
        }
        catch (Exception e)
        {
            _log.Error(e, "freeing the stage's model failed");
        }
    }

    private void WatchCoordinator(IActorRef coordinator)
    {
        if (!coordinator.Equals(_coordinator))
        {
            if (_coordinator is not null)
            {
                Context.Unwatch(_coordinator);
            }

            _coordinator = coordinator;
            Context.Watch(coordinator);
        }
    }

    private void StartTier(PipelineActorKind tier)
    {
        var actor = Context.ActorOf(PipelineActor.PropsFor(tier, _runs), GenerationCoordinator.ChildName(tier));
        Context.Watch(actor);
        _tiers[tier] = actor;
    }

    /// <summary>The block this stage runs now and how it ends.</summary>
    private sealed class StageBlock(RunStageBlock command, BlockExecution execution, TraceRecorder trace)
    {
        public RunStageBlock Command { get; } = command;

        public BlockExecution Execution { get; } = execution;

        public TraceRecorder Trace { get; } = trace;

        public IPipelineRun Run => Execution.Run;

        public int LastLayer => Execution.Shape.NumLayers - 1;

        public bool LastStage => Execution.Shape.LastStage;

        public bool Aborting { get; set; }

        public string? FailureReason { get; set; }

        public IActorRef? AbortedBy { get; set; }

        public bool StopReported { get; set; }
    }
}
