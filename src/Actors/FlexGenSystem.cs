namespace FlexGen.Actors;

using Akka.Actor;
using Akka.Configuration;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors.Policies;

/// <summary>
/// The embeddable entry point: an actor system with the HOCON of hocon/flexgen.conf and one
/// <see cref="GenerationCoordinator"/> (which owns the tier actors and the model).
/// <code>
/// var settings = new EngineSettings { ModelPath = "models/my-model", Policy = policy, OffloadDirectory = "/tmp/offload" };
/// await using var flexgen = FlexGenSystem.Start(settings);            // loads the model under settings.Policy
/// GenerationResult r = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids, Generation = new(32) }, ct);
/// r.OutputIds;   // (n, gen_len)        r.Timings;  // prefill / decode
/// r.PeakBytes;   // per memory tier     r.Trace.WriteChromeJson("run.trace.json"); r.Trace.Summarize();
/// </code>
/// Hosts with their own ActorSystem: include <see cref="FlexGenHocon.Config"/> and create
/// <see cref="GenerationCoordinator.Props(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?)"/> themselves; talk
/// to it with Ask&lt;GenerationResult&gt;(GenerateRequest) and Tell(CancelGeneration).
/// </summary>
public sealed class FlexGenSystem : IAsyncDisposable
{
    private readonly bool _ownsSystem;

    private FlexGenSystem(ActorSystem system, IActorRef coordinator, bool ownsSystem)
    {
        System = system;
        Coordinator = coordinator;
        _ownsSystem = ownsSystem;
    }

    public ActorSystem System { get; }

    public IActorRef Coordinator { get; }

    /// <summary>Starts a system running the model of <paramref name="settings"/> (loaded on the first request).</summary>
    public static FlexGenSystem Start(EngineSettings settings, string name = "flexgen", Config? config = null) =>
        Start(settings.Policy, (policy, cancellationToken) => TorchPipelineBackend.Create(settings, policy, cancellationToken: cancellationToken), settings.Pipeline, name, config);

    /// <summary>
    /// Starts a system whose coordinator builds its backend with <paramref name="backendFactory"/>; <paramref name="options"/>
    /// null: flexgen.pipeline of the config. Throws <see cref="PipelineSettingsException"/> when those settings are out of range.
    /// </summary>
    public static FlexGenSystem Start(Policy defaultPolicy, Func<Policy, IPipelineBackend> backendFactory, PipelineSettings? options = null, string name = "flexgen", Config? config = null) =>
        Start(defaultPolicy, (policy, _) => backendFactory(policy), options, name, config);

    /// <summary>
    /// As <see cref="Start(Policy, Func{Policy, IPipelineBackend}, PipelineSettings?, string, Config?)"/> with a factory that
    /// stops loading (throws <see cref="OperationCanceledException"/>, having freed what it loaded) when its token is
    /// signalled: cancelling a request while its model loads signals it.
    /// </summary>
    public static FlexGenSystem Start(Policy defaultPolicy, Func<Policy, CancellationToken, IPipelineBackend> backendFactory, PipelineSettings? options = null, string name = "flexgen", Config? config = null)
    {
        var system = ActorSystem.Create(name, (config ?? Config.Empty).WithFallback(FlexGenHocon.Config));
        try
        {
            // Read here rather than in the coordinator, so bad flexgen.pipeline settings fail Start itself.
            options ??= PipelineSettings.FromConfig(system.Settings.Config);
        }
        catch
        {
            system.Terminate().Wait();
            throw;
        }

        var coordinator = system.ActorOf(GenerationCoordinator.Props(defaultPolicy, backendFactory, options), "generation-coordinator");
        return new FlexGenSystem(system, coordinator, ownsSystem: true);
    }

    /// <summary>Wraps a coordinator running in a host's actor system (not shut down on dispose).</summary>
    public static FlexGenSystem Attach(ActorSystem system, IActorRef coordinator) => new(system, coordinator, ownsSystem: false);

    /// <summary>
    /// Runs <paramref name="request"/>. Completes after the request's buffers and offload files are released.
    /// Throws <see cref="GenerationFailedException"/> (InnerException = the cause) on failure (also when the actor system
    /// has terminated) and
    /// <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> cancelled it.
    /// </summary>
    public Task<GenerationResult> GenerateAsync(GenerateRequest request, CancellationToken cancellationToken = default) =>
        GenerateAsync(request, null, cancellationToken);

    /// <summary>
    /// As <see cref="GenerateAsync(GenerateRequest, CancellationToken)"/>, telling <paramref name="progress"/> of each
    /// token every block completes, in order (through a local <see cref="ProgressRelay"/> given to the request as
    /// <see cref="GenerateRequest.ProgressTo"/>; every report is made before this completes).
    /// </summary>
    public async Task<GenerationResult> GenerateAsync(GenerateRequest request, IProgress<GenerationProgress>? progress, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var relay = progress is null ? null : System.ActorOf(ProgressRelay.Props(progress));
        try
        {
            return await AskAsync(relay is null ? request : request with { ProgressTo = relay }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (relay is not null && !System.WhenTerminated.IsCompleted)
            {
                // The reports were sent before the reply: the PoisonPill queues behind them, so they are all made when it stops.
                await relay.GracefulStop(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            }
        }
    }

    private async Task<GenerationResult> AskAsync(GenerateRequest request, CancellationToken cancellationToken)
    {
        var coordinator = Coordinator;
        var requestId = request.RequestId;

        // No Ask timeout and no token on the Ask itself: the reply comes after cleanup, also when cancelled. Ask sends
        // the request before it returns; registering only then puts any CancelGeneration behind the request in the
        // coordinator's mailbox (sent earlier, it would find nothing to cancel and the request would run to the end).
        var reply = coordinator.Ask<GenerationResult>(request, Timeout.InfiniteTimeSpan);
        await using var registration = cancellationToken.Register(() => coordinator.Tell(new CancelGeneration(requestId)));
        try
        {
            // A terminated system never answers (the request went to dead letters): fail instead of waiting for ever.
            if (await Task.WhenAny(reply, System.WhenTerminated).ConfigureAwait(false) != reply && !reply.IsCompleted)
            {
                throw new GenerationFailedException(requestId, $"request {requestId} failed: the actor system {System.Name} has terminated",
                    new InvalidOperationException($"the actor system {System.Name} has terminated"));
            }

            return await reply.ConfigureAwait(false);
        }
        catch (GenerationFailedException e) when (e.InnerException is OperationCanceledException && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException($"request {requestId} was cancelled", e, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_ownsSystem)
        {
            await System.Terminate().ConfigureAwait(false);
        }
    }
}
