namespace FlexGen.Actors.Actors;

using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Actors.Coordination;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;

// Starting, driving and ending requests: the transitions the state behaviours (GenerationCoordinator.States.cs) take.
public sealed partial class GenerationCoordinator
{
    /// <summary>Starts queued requests until one runs or loads (requests that fail validation are answered at once).</summary>
    private void StartNext()
    {
        while (_state is IdleState && _pending.TryTake(out var next))
        {
            try
            {
                RequestBlocks.Validate(next.Request); // before a model is (re)loaded for it
                var policy = next.Request.Policy ?? _defaultPolicy;
                if (_backend is null || _backend.Policy != policy)
                {
                    _backend?.Dispose();
                    _backend = null;
                    Enter(new LoadingState(ModelLoad.Start(next.Request, next.ReplyTo, _backendFactory, policy, Self), Cancelled: false));
                    return;
                }
            }
            catch (Exception e)
            {
                next.ReplyTo.Tell(Failure(next.Request.RequestId, e));
                continue;
            }

            Begin(next);
        }
    }

    /// <summary>Starts <paramref name="next"/>'s first block on the loaded model: running, or idle again if it cannot start.</summary>
    private void Begin(PendingRequest next)
    {
        RequestExecution execution;
        try
        {
            var blocks = RequestBlocks.Split(next.Request, _backend!.Policy, _backend.PadTokenId);
            _backend.ResetPeaks();
            execution = new RequestExecution(next.Request, next.ReplyTo, blocks);
            execution.StartBlock(0, _backend, _runs, _options);
        }
        catch (Exception e)
        {
            next.ReplyTo.Tell(Failure(next.Request.RequestId, e));
            Enter(IdleState.Instance);
            return;
        }

        Enter(new RunningState(execution));
        Dispatch(execution);
    }

    private void Dispatch(RequestExecution execution)
    {
        execution.Block!.DispatchReady(_tiers);
    }

    private void OnCompleted(RequestExecution execution, TaskCompleted completed)
    {
        execution.Complete(completed); // a bookkeeping error throws here: the coordinator restarts (see PreRestart)
        if (!execution.Block!.Dispatcher.IsFinished)
        {
            Dispatch(execution);
            return;
        }

        try
        {
            if (execution.FinishBlock(_runs) is { } next)
            {
                execution.StartBlock(next, _backend!, _runs, _options);
                Dispatch(execution);
                return;
            }

            execution.ReplyTo.Tell(execution.Result(_backend!.PeakBytes));
        }
        catch (Exception e)
        {
            Enter(new DrainingState(execution, e));
            return;
        }

        Enter(IdleState.Instance);
    }

    /// <summary>Once no part of the run is in flight: frees the run, fails the request, and goes idle.</summary>
    private void FinishIfDrained(DrainingState state)
    {
        var execution = state.Execution;
        if (!ReferenceEquals(_state, state) || execution.Block is { Dispatcher.InFlight: > 0 })
        {
            return;
        }

        try
        {
            execution.FreeBlock(_runs);
        }
        catch (Exception e)
        {
            _log.Error(e, "disposing the run of request {0} failed", execution.Request.RequestId);
        }

        execution.ReplyTo.Tell(Failure(execution.Request.RequestId, state.Cause));
        Enter(IdleState.Instance);
    }
}
