namespace FlexGen.Actors.Tests;

using Akka.Actor;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;

/// <summary>A coordinator restarted by its parent frees its run and model only after its tier actors stopped.</summary>
public class CoordinatorRestartTests : Akka.TestKit.Xunit2.TestKit
{
    public CoordinatorRestartTests()
        : base(FlexGenHocon.Config, "coordinator-restart")
    {
    }

    [Fact]
    public async Task Coordinator_restart_should_dispose_the_run_only_after_the_running_part_ended_and_serve_the_next_request()
    {
        var policy = TestPolicies.Offloaded(1, overlap: true, sep: false, cpuCacheCompute: false);
        var backend = new RecordingBackend(policy, 1);
        using var partRunning = new ManualResetEventSlim();
        using var releasePart = new ManualResetEventSlim();
        int parts = 0;
        backend.OnPart = (_, _) =>
        {
            if (Interlocked.Increment(ref parts) == 1)
            {
                partRunning.Set();
                releasePart.Wait(TimeSpan.FromSeconds(20));
            }
        };
        var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, _ => backend), "coordinator");
        var first = coordinator.Ask<GenerationResult>(new GenerateRequest { PromptIds = TestPolicies.Prompts(2), Generation = new(2) }, TimeSpan.FromSeconds(30));
        Assert.True(partRunning.Wait(TimeSpan.FromSeconds(5)));
        Assert.True(backend.Runs.TryPeek(out var run));

        // An answer from cpu-compute, which this policy never gives a part, breaks the coordinator's bookkeeping: it
        // throws and its parent restarts it.
        coordinator.Tell(new TaskCompleted(run!.Id, run!.Schedule.Tasks[^1].Task, PipelineActorKind.CpuCompute));
        await Task.Delay(500);
        Assert.False(run.Disposed, "the run was disposed while a tier actor still ran a part of it");
        Assert.False(backend.Disposed);

        releasePart.Set();
        await Assert.ThrowsAsync<GenerationFailedException>(() => first);
        AwaitCondition(() => run.Disposed && backend.Disposed, TimeSpan.FromSeconds(5));

        var next = await coordinator.Ask<GenerationResult>(new GenerateRequest { PromptIds = TestPolicies.Prompts(2), Generation = new(2) }, TimeSpan.FromSeconds(20));
        Assert.Equal(2, next.OutputIds.Length);
    }
}
