namespace FlexGen.Actors.Actors;

using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Actors.Coordination;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

// The coordinator's states, each a behaviour (Become) over its own data:
//   idle      --GenerateRequest, model loaded for its policy--> running
//   idle      --GenerateRequest, another policy (or none)----> loading
//   loading   --ModelLoaded--> running;  --ModelLoadFailed, or loaded after a cancel--> idle (request failed)
//   running   --last part of the last block--> idle (result);  --next block--> running
//   running   --TaskFailed, Terminated, CancelGeneration, a bookkeeping error--> draining (run cancelled)
//   draining  --no part in flight--> idle (run freed, request failed)
// Leaving for idle starts the next queued request. Every state queues GenerateRequests and drops queued ones on
// CancelGeneration; answers about runs no longer current are ignored.
public sealed partial class GenerationCoordinator
{
    private CoordinatorState _state = IdleState.Instance;

    private abstract record CoordinatorState;

    private sealed record IdleState : CoordinatorState
    {
        public static IdleState Instance { get; } = new();
    }

    /// <param name="Cancelled">The request was cancelled while its model loaded: answer once the load gave up.</param>
    private sealed record LoadingState(ModelLoad Load, bool Cancelled) : CoordinatorState;

    private sealed record RunningState(RequestExecution Execution) : CoordinatorState;

    /// <param name="Cause">Why the request fails (the first failure or cancellation wins).</param>
    private sealed record DrainingState(RequestExecution Execution, Exception Cause) : CoordinatorState;

    protected override void OnReceive(object message) => Idle(message);

    private void Enter(CoordinatorState state)
    {
        _state = state;
        switch (state)
        {
            case IdleState:
                Become(Idle);
                StartNext();
                break;
            case LoadingState loading:
                Become(message => Loading(loading, message));
                break;
            case RunningState running:
                Become(message => Running(running.Execution, message));
                break;
            case DrainingState draining:
                // Parts not yet started are skipped; those in flight still answer before the run can be freed.
                draining.Execution.Block?.Run.Cancel();
                Become(message => Draining(draining, message));
                FinishIfDrained(draining);
                break;
        }
    }

    private void Idle(object message)
    {
        if (message is Terminated terminated)
        {
            ReplaceTier(terminated.ActorRef);
            return;
        }

        InAnyState(message);
    }

    private void Loading(LoadingState state, object message)
    {
        var load = state.Load;
        switch (message)
        {
            case ModelLoaded loaded when loaded.LoadId == load.Id:
                load.Finished();
                if (state.Cancelled)
                {
                    // Cancelled while loading: the model that loaded all the same is freed (the next request reloads it).
                    DisposeQuietly(loaded.Backend);
                    FailCancelledLoad(load);
                    return;
                }

                _backend = loaded.Backend;
                Begin(new PendingRequest(load.Request, load.ReplyTo));
                return;
            case ModelLoadFailed failed when failed.LoadId == load.Id:
                load.Finished();
                if (state.Cancelled)
                {
                    FailCancelledLoad(load);
                    return;
                }

                load.ReplyTo.Tell(Failure(load.Request.RequestId, failed.Cause));
                Enter(IdleState.Instance);
                return;
            case CancelGeneration cancel when cancel.RequestId == load.Request.RequestId:
                // Answered once the load has given up and freed what it loaded.
                load.Cancel();
                Enter(state with { Cancelled = true });
                return;
            case Terminated terminated:
                ReplaceTier(terminated.ActorRef);
                return;
            default:
                InAnyState(message);
                return;
        }
    }

    private void Running(RequestExecution execution, object message)
    {
        switch (message)
        {
            case TaskCompleted completed when execution.IsRunning(completed.Run):
                OnCompleted(execution, completed);
                return;
            case TaskFailed failed when execution.IsRunning(failed.Run):
                execution.Block!.Dispatcher.Abandon(failed.Actor);
                Enter(new DrainingState(execution, failed.Cause));
                return;
            case TaskSkipped skipped when execution.IsRunning(skipped.Run):
                // Only a cancelled run skips parts: a skip while running means the schedule can no longer finish.
                execution.Block!.Dispatcher.Abandon(skipped.Actor);
                Enter(new DrainingState(execution, new InvalidOperationException($"{skipped.Actor.ActorName()} skipped {skipped.Task} of a live run")));
                return;
            case CancelGeneration cancel when cancel.RequestId == execution.Request.RequestId:
                Enter(new DrainingState(execution, new OperationCanceledException($"request {cancel.RequestId} was cancelled")));
                return;
            case Terminated terminated:
                var tier = ReplaceTier(terminated.ActorRef);
                execution.Block?.Dispatcher.AbandonAll(tier);
                Enter(new DrainingState(execution, new InvalidOperationException($"tier actor {tier.ActorName()} stopped")));
                return;
            default:
                InAnyState(message);
                return;
        }
    }

    private void Draining(DrainingState state, object message)
    {
        var execution = state.Execution;
        switch (message)
        {
            case TaskCompleted completed when execution.IsRunning(completed.Run):
                execution.Block!.Dispatcher.Complete(completed.Task, completed.Actor);
                FinishIfDrained(state);
                return;
            case TaskFailed failed when execution.IsRunning(failed.Run):
                execution.Block!.Dispatcher.Abandon(failed.Actor);
                FinishIfDrained(state);
                return;
            case TaskSkipped skipped when execution.IsRunning(skipped.Run):
                execution.Block!.Dispatcher.Abandon(skipped.Actor);
                FinishIfDrained(state);
                return;
            case CancelGeneration cancel when cancel.RequestId == execution.Request.RequestId:
                return; // already ending
            case Terminated terminated:
                execution.Block?.Dispatcher.AbandonAll(ReplaceTier(terminated.ActorRef));
                FinishIfDrained(state);
                return;
            default:
                InAnyState(message);
                return;
        }
    }

    private void InAnyState(object message)
    {
        switch (message)
        {
            case GenerateRequest request:
                _pending.Add(request, Sender);
                if (_state is IdleState)
                {
                    StartNext();
                }

                break;
            case CancelGeneration cancel when _pending.TryRemove(cancel.RequestId, out var queued):
                queued.ReplyTo.Tell(new Status.Failure(new GenerationFailedException(cancel.RequestId, $"request {cancel.RequestId} was cancelled before it started",
                    new OperationCanceledException($"request {cancel.RequestId} was cancelled"))));
                break;
            case CancelGeneration:
                break; // already answered
            case ModelLoaded stale:
                DisposeQuietly(stale.Backend); // a load no longer tracked: free its model all the same
                break;
            case ModelLoadFailed or TaskCompleted or TaskSkipped or TaskFailed:
                break; // about a load or a run already gone: nothing to do
            default:
                Unhandled(message);
                break;
        }
    }

    private void FailCancelledLoad(ModelLoad load)
    {
        var cancelled = new OperationCanceledException($"request {load.Request.RequestId} was cancelled while its model loaded");
        load.ReplyTo.Tell(Failure(load.Request.RequestId, cancelled));
        Enter(IdleState.Instance);
    }

    private void DisposeQuietly(IPipelineBackend backend)
    {
        try
        {
            backend.Dispose();
        }
        catch (Exception e)
        {
            _log.Error(e, "disposing a model no request needs failed");
        }
    }
}
