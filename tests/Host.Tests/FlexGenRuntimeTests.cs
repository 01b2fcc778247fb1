namespace FlexGen.Host.Tests;

using Akka.Actor;
using FlexGen.Host.Cli;
using FlexGen.Host.Hosting;
using Microsoft.Extensions.DependencyInjection;

public class FlexGenRuntimeTests
{
    [Fact]
    public async Task The_commands_actor_system_should_allow_its_termination_the_runtimes_timeout_not_Akkas_ten_seconds()
    {
        using var folder = new TempFolder();
        var console = new CliConsole(new StringWriter(), new StringWriter(), Verbose: false, Terminal: false);
        var options = new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "float32", OffloadDir = folder.File("offload"), AkkaLogLevel = "OFF" };

        await using var runtime = await FlexGenRuntime.StartAsync(options, model: null, console, CancellationToken.None);

        // Deleting a large offload folder at termination outlasts Akka's 10 s, and the command waits for it anyway.
        var config = runtime.Services.GetRequiredService<ActorSystem>().Settings.Config;
        Assert.Equal(FlexGenRuntime.TerminateTimeout, config.GetTimeSpan("akka.coordinated-shutdown.phases.actor-system-terminate.timeout"));
        Assert.True(FlexGenRuntime.TerminateTimeout > TimeSpan.FromSeconds(10));
    }
}
