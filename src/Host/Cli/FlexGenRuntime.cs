namespace FlexGen.Host.Cli;

using Akka.Actor;
using Akka.Hosting;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Stages;
using FlexGen.Actors.Hosting;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Policies;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

/// <summary>
/// The CLI's embedded host: a Microsoft.Extensions.Hosting host with Akka.Hosting and FlexGen inside, exactly as
/// an application embeds it. Disposing stops the host (CoordinatedShutdown: tiers freed, offload files deleted).
/// </summary>
public sealed class FlexGenRuntime : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly CliConsole _console;
    private readonly IDisposable? _abandoned;

    private FlexGenRuntime(IHost host, FlexGenSetup setup, CliConsole console, IDisposable? abandoned)
    {
        _host = host;
        _console = console;
        _abandoned = abandoned;
        Setup = setup;
        Service = host.Services.GetRequiredService<IGenerationService>();
    }

    public FlexGenSetup Setup { get; }

    public IGenerationService Service { get; }

    public ResolvedModel Model => Setup.Model;

    public Policy Policy => Setup.Policy;

    public string ComputeDtype => Setup.ComputeDtype.ToString().ToLowerInvariant();

    public string Device => Setup.Device;

    public IServiceProvider Services => _host.Services;

    /// <summary>How long a node alone may take to terminate its actor system before Akka warns (Akka's default is 10 s).</summary>
    public static TimeSpan TerminateTimeout { get; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// The termination phase's timeout for a node alone: the command waits for its backends after the shutdown anyway
    /// (<see cref="DisposeAsync"/>; a second signal abandons the wait), so Akka's 10 s would only warn: deleting OPT-30B's
    /// 56.5 GB offload folder took about 12 s. Null (Akka's) for a node of a pipeline over several nodes, whose
    /// termination waits on a killed stage until the phase's timeout.
    /// </summary>
    public static string? TerminationHocon(FlexGenOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Cluster is null
            ? $"akka.coordinated-shutdown.phases.actor-system-terminate.timeout = {(int)TerminateTimeout.TotalSeconds}s"
            : null;
    }

    /// <param name="geometry">The run's prompt and generation lengths: checked against the tier budgets before the host
    /// starts (a run that does not fit is refused with nothing loaded).</param>
    /// <param name="measureHardware">The command reads the hardware profile (bench): measured before the threads are chosen (<see cref="FlexGenSetup.Create"/>).</param>
    public static async Task<FlexGenRuntime> StartAsync(FlexGenOptions options, ResolvedModel? model, CliConsole console,
        CancellationToken cancellation, (int PromptLen, int GenLen)? geometry = null, bool measureHardware = false)
    {
        options.AkkaLogLevel ??= console.Verbose ? "INFO" : "WARNING";
        var setup = FlexGenSetup.Create(options, model, line => console.Error.WriteLine(line), measureHardware);
        if (geometry is { } run) setup.CheckFits(run.PromptLen, run.GenLen);
        // A later signal stops every wait: the files go now, also from under a step still running.
        var abandoned = console.Signals?.OnAbandon(setup.DeleteOffloadFilesNow);
        string stage = setup.Model.Location.DummyWeights ? "load dummy weights" : "load weights";
        WeightLoadProgressDisplay? loading = null;
        setup.WeightsLoading += _ => loading = new WeightLoadProgressDisplay(
            console, stage, $"{setup.Model.Config.Name} into their tiers");
        setup.WeightsLoadProgress += progress => loading?.Report(progress);
        setup.WeightsLoaded += (_, elapsed) => loading?.Complete(elapsed);
        // The bar's line ends before the failure is reported below it.
        setup.WeightsLoadFailed += (_, _) => loading?.Dispose();
        setup.StaleOffloadFoldersRemoved += sweep => console.Error.WriteLine(sweep.Describe());
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        // The CLI handles SIGINT/SIGTERM itself (CliSignals): no console lifetime stopping the host beside it.
        builder.Services.AddSingleton<IHostLifetime, CommandLifetime>();
        builder.Services.AddFlexGenService(setup);
        builder.Services.AddAkka("flexgen", (akka, _) =>
        {
            akka.AddFlexGen(setup);
            // Akka's lines on standard error (results stay alone on standard output), at the CLI's level.
            akka.AddHocon(StandardErrorLogging.Hocon(options.AkkaLogLevel), HoconAddMode.Prepend);
            // Signals are the CLI's (CliSignals): Akka's own exit hook stays out of it.
            akka.AddHocon("akka.coordinated-shutdown.run-by-clr-shutdown-hook = off", HoconAddMode.Prepend);
            if (TerminationHocon(options) is { } termination) akka.AddHocon(termination, HoconAddMode.Prepend);
        });
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellation).ConfigureAwait(false);
            return new FlexGenRuntime(host, setup, console, abandoned);
        }
        catch
        {
            loading?.Dispose();
            abandoned?.Dispose();
            host.Dispose();
            setup.DeleteOwnedOffloadDir();
            throw;
        }
    }

    /// <summary>
    /// On the coordinating node of a pipeline over several nodes: waits for the other stages, plans their layer ranges and
    /// has them load (<see cref="FormPipeline"/>).
    /// </summary>
    /// <exception cref="PipelinePlanException">The stages did not come, or the plan is refused (with the numbers).</exception>
    public async Task<PipelinePlan> FormPipelineAsync(CancellationToken cancellation)
    {
        var coordinator = await Services.GetRequiredService<IRequiredActor<GenerationCoordinator>>().GetAsync(cancellation).ConfigureAwait(false);
        var cluster = Setup.Options.Cluster ?? throw new InvalidOperationException("this node is not part of a pipeline over several nodes");
        // The coordinator answers within the stage wait plus the stages' loading (its own timeouts bound both).
        return await coordinator.Ask<PipelinePlan>(FormPipeline.Instance, TimeSpan.FromSeconds(cluster.StageWaitSeconds) + TimeSpan.FromMinutes(11), cancellation)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// On a stage worker: completes once this node's cluster membership is over: the coordinating node it served has left
    /// or is gone, or this node was removed (downed), or the actor system stopped. Returns why.
    /// </summary>
    public async Task<string> WhenClusterSessionEndsAsync(CancellationToken cancellation)
    {
        var system = Services.GetRequiredService<ActorSystem>();
        var cluster = Akka.Cluster.Cluster.Get(system);
        bool joined = false, served = false;
        while (true)
        {
            if (system.WhenTerminated.IsCompleted) return "this node's actor system stopped";
            // Before it has joined, a node's own status reads Removed too.
            joined |= cluster.SelfMember.Status == Akka.Cluster.MemberStatus.Up;
            if (joined && (cluster.IsTerminated || cluster.SelfMember.Status is Akka.Cluster.MemberStatus.Down or Akka.Cluster.MemberStatus.Removed or Akka.Cluster.MemberStatus.Exiting))
                return "this node was removed from the cluster";
            bool coordinatorUp = cluster.State.Members.Any(m => m.HasRole(FlexGenHostingExtensions.CoordinatorRole) && m.Status == Akka.Cluster.MemberStatus.Up
                && !cluster.State.Unreachable.Contains(m));
            if (served && !coordinatorUp) return "the coordinating node left";
            served |= coordinatorUp;
            await Task.Delay(500, cancellation).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Stops the host (CoordinatedShutdown) and waits until every backend is disposed: a tier actor finishes the step it
    /// runs first, which may outlast the shutdown's own wait. A later signal (<see cref="CliConsole.Abandon"/>) stops that
    /// wait; the offload files were deleted as it came.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAndReleaseAsync().WaitAsync(_console.Abandon).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_console.Abandon.IsCancellationRequested)
        {
            // The process exits now: the files go from under the step; its memory goes with the process.
            Setup.DeleteOffloadFilesNow();
            return;
        }
        finally
        {
            _abandoned?.Dispose();
        }

        _host.Dispose();
        Setup.DeleteOwnedOffloadDir();
    }

    private async Task StopAndReleaseAsync()
    {
        try
        {
            await _host.StopAsync().ConfigureAwait(false);
        }
        finally
        {
            // Every backend, also one whose actor's step outlasted CoordinatedShutdown's phase timeouts.
            await Setup.WhenBackendsReleasedAsync().ConfigureAwait(false);
        }
    }

    /// <summary>A lifetime that leaves the process's signals alone: the command starts and stops the host itself.</summary>
    private sealed class CommandLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
