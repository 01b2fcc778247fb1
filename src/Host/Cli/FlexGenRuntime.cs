namespace FlexGen.Host.Cli;

using Akka.Hosting;
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

    private FlexGenRuntime(IHost host, FlexGenSetup setup)
    {
        _host = host;
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

    /// <param name="geometry">The run's prompt and generation lengths: checked against the tier budgets before the host
    /// starts (a run that does not fit is refused with nothing loaded).</param>
    public static async Task<FlexGenRuntime> StartAsync(FlexGenOptions options, ResolvedModel? model, CliConsole console,
        CancellationToken cancellation, (int PromptLen, int GenLen)? geometry = null)
    {
        options.AkkaLogLevel ??= console.Verbose ? "INFO" : "WARNING";
        var setup = FlexGenSetup.Create(options, model);
        if (geometry is { } run) setup.CheckFits(run.PromptLen, run.GenLen);
        string stage = setup.Model.Location.DummyWeights ? "load dummy weights" : "load weights";
        WeightLoadProgressDisplay? loading = null;
        setup.WeightsLoading += _ => loading = new WeightLoadProgressDisplay(
            console, stage, $"{setup.Model.Config.Name} into their tiers");
        setup.WeightsLoadProgress += progress => loading?.Report(progress);
        setup.WeightsLoaded += (_, elapsed) => loading?.Complete(elapsed);
        // The bar's line ends before the failure is reported below it.
        setup.WeightsLoadFailed += (_, _) => loading?.Dispose();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddFlexGenService(setup);
        builder.Services.AddAkka("flexgen", (akka, _) => akka.AddFlexGen(setup));
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellation).ConfigureAwait(false);
            return new FlexGenRuntime(host, setup);
        }
        catch
        {
            loading?.Dispose();
            host.Dispose();
            setup.DeleteOwnedOffloadDir();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _host.StopAsync().ConfigureAwait(false);
        }
        finally
        {
            _host.Dispose();
            Setup.DeleteOwnedOffloadDir();
        }
    }
}
