namespace FlexGen.Actors.Actors.Coordination;

using Akka.Actor;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors;
using FlexGen.Tensors.Policies;

/// <summary>
/// A model being loaded off the coordinator's thread for <see cref="Request"/> (the only request started until it is
/// loaded). The outcome comes back to the coordinator as <see cref="ModelLoaded"/> or <see cref="ModelLoadFailed"/>.
/// </summary>
internal sealed class ModelLoad
{
    private readonly CancellationTokenSource _cancellation = new();
    private readonly Task<IPipelineBackend> _loaded;

    private ModelLoad(GenerateRequest request, IActorRef replyTo, Func<Policy, CancellationToken, IPipelineBackend> factory, Policy policy)
    {
        Request = request;
        ReplyTo = replyTo;
        _loaded = Task.Run(() =>
        {
            try
            {
                return factory(policy, _cancellation.Token);
            }
            finally
            {
                // The load's parallel conversions left an OpenMP team on this pool thread; ended here, it does not
                // throttle the compute's (OpenMpTeams).
                OpenMpTeams.Release();
            }
        }, CancellationToken.None);
    }

    public Guid Id { get; } = Guid.NewGuid();

    public GenerateRequest Request { get; }

    public IActorRef ReplyTo { get; }

    /// <summary>Starts loading the model for <paramref name="policy"/> and pipes the outcome to <paramref name="coordinator"/>.</summary>
    public static ModelLoad Start(GenerateRequest request, IActorRef replyTo, Func<Policy, CancellationToken, IPipelineBackend> factory, Policy policy, IActorRef coordinator)
    {
        var load = new ModelLoad(request, replyTo, factory, policy);
        var id = load.Id;
        load._loaded.PipeTo(coordinator, success: backend => new ModelLoaded(id, backend),
            failure: e => new ModelLoadFailed(id, e is AggregateException { InnerExceptions.Count: 1 } single ? single.InnerException! : e));
        return load;
    }

    /// <summary>Signals the factory's token: it gives up, having freed what it loaded (the outcome still comes back).</summary>
    public void Cancel() => _cancellation.Cancel();

    /// <summary>Called once the outcome came back.</summary>
    public void Finished() => _cancellation.Dispose();

    /// <summary>Stops the load without waiting for it (the coordinator is going away): a model that still loads is freed.</summary>
    public void Abandon()
    {
        _cancellation.Cancel();
        _loaded.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
    }
}

/// <summary>The model of load <paramref name="LoadId"/> is in its tiers. Local: it carries the live backend.</summary>
internal sealed record ModelLoaded(Guid LoadId, IPipelineBackend Backend) : INoSerializationVerificationNeeded;

/// <summary>Load <paramref name="LoadId"/> failed or gave up. Local: the coordinator's message to itself.</summary>
internal sealed record ModelLoadFailed(Guid LoadId, Exception Cause) : INoSerializationVerificationNeeded;
