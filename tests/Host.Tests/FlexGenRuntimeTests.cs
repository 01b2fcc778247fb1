namespace FlexGen.Host.Tests;

using Akka.Actor;
using FlexGen.Host.Cli;
using FlexGen.Host.Hosting;
using Microsoft.Extensions.DependencyInjection;

public class FlexGenRuntimeTests
{
    private const string TerminatePhase = "akka.coordinated-shutdown.phases.actor-system-terminate.timeout";

    [Fact]
    public async Task A_node_alone_should_allow_its_termination_the_runtimes_timeout_not_Akkas_ten_seconds()
    {
        using var folder = new TempFolder();
        var console = new CliConsole(new StringWriter(), new StringWriter(), Verbose: false, Terminal: false);
        var options = new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "float32", OffloadDir = folder.File("offload"), AkkaLogLevel = "OFF" };

        await using var runtime = await FlexGenRuntime.StartAsync(options, model: null, console, CancellationToken.None);

        // Deleting a large offload folder at termination outlasts Akka's 10 s, and the command waits for it anyway.
        var config = runtime.Services.GetRequiredService<ActorSystem>().Settings.Config;
        Assert.Equal(FlexGenRuntime.TerminateTimeout, config.GetTimeSpan(TerminatePhase));
        Assert.True(FlexGenRuntime.TerminateTimeout > TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void A_node_of_a_pipeline_over_several_nodes_should_keep_Akkas_termination_timeout()
    {
        // Its termination waits on a killed stage until the phase's timeout: a long one would hold the command that long.
        Assert.Null(FlexGenRuntime.TerminationHocon(new FlexGenOptions { Cluster = new StageClusterOptions() }));
        Assert.Contains(TerminatePhase, FlexGenRuntime.TerminationHocon(new FlexGenOptions()));
    }
}
