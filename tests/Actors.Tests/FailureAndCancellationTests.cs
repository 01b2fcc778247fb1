namespace FlexGen.Actors.Tests;

using Akka.Actor;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;

public class FailureAndCancellationTests : Akka.TestKit.Xunit2.TestKit
{
    private readonly RecordingBackend _backend;
    private readonly IActorRef _coordinator;

    public FailureAndCancellationTests()
        : base(FlexGenHocon.Config, "failures")
    {
        var policy = TestPolicies.Offloaded(2, overlap: true, sep: true, cpuCacheCompute: true);
        _backend = new RecordingBackend(policy, 2);
        _coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, _ => _backend), "coordinator");
    }

    private static GenerateRequest Request(int gen = 3) => new() { PromptIds = TestPolicies.Prompts(8), Generation = new(gen) };

    private IActorRef Tier(PipelineActorKind tier)
    {
        IActorRef? found = null;
        AwaitAssert(() => found = Sys.ActorSelection(_coordinator.Path / GenerationCoordinator.ChildName(tier)).ResolveOne(TimeSpan.FromSeconds(1)).Result,
            TimeSpan.FromSeconds(5), TimeSpan.FromMilliseconds(50));
        return found!;
    }

    private void AssertNextRequestSucceeds()
    {
        _backend.OnPart = null;
        _backend.BreakTrace = false;
        var result = _coordinator.Ask<GenerationResult>(Request(), TimeSpan.FromSeconds(20)).Result;
        Assert.Equal(8, result.OutputIds.Length);
    }

    public static TheoryData<TaskKind, int, int, int, PipelineActorKind> FaultPoints() => new()
    {
        { TaskKind.ComputeLayer, 1, 1, 1, PipelineActorKind.CpuCompute },
        { TaskKind.ComputeLayer, 0, 2, 0, PipelineActorKind.GpuCompute },
        { TaskKind.LoadWeight, 2, 3, 0, PipelineActorKind.Copy },
        { TaskKind.LoadWeight, 1, 1, 0, PipelineActorKind.DiskIo },
        { TaskKind.LoadCache, 1, 3, 0, PipelineActorKind.DiskIo },
        { TaskKind.StoreHidden, 0, 5, 1, PipelineActorKind.Copy },
    };

    [Theory]
    [MemberData(nameof(FaultPoints))]
    public void A_fault_in_a_tier_actor_should_fail_the_request_with_it_as_cause_free_the_run_and_leave_the_system_usable(TaskKind kind, int i, int j, int k, PipelineActorKind tier)
    {
        var target = new BlockTask(kind, i, j, k);
        var fault = new IOException($"injected at {target}");
        _backend.OnPart = (task, t) =>
        {
            if (task == target && t == tier)
            {
                throw fault;
            }
        };
        var actor = Tier(tier);
        Watch(actor);

        var error = Assert.Throws<GenerationFailedException>(() => RunSync(Request()));
        Assert.Same(fault, error.InnerException);

        var run = Assert.Single(_backend.Runs);
        Assert.True(run.Disposed);
        Assert.True(run.IsCancelled);
        // The schedule stopped: nothing after the fault's step ran to the end of the schedule.
        Assert.DoesNotContain(run.Parts, p => p.Task.Kind == TaskKind.StoreHidden && p.Task.Token == 2 && p.Task.Layer == 5 && p.Task.Batch == 1);
        ExpectNoMsg(TimeSpan.FromMilliseconds(200)); // restarted, not stopped: no Terminated
        AssertNextRequestSucceeds();
    }

    [Fact]
    public void A_part_failing_after_the_request_was_cancelled_should_still_end_the_request_and_free_the_run()
    {
        var request = Request();
        var target = new BlockTask(TaskKind.ComputeLayer, 1, 2, 1);
        _backend.OnPart = (task, _) =>
        {
            if (task == target)
            {
                // The cancellation is handled while this part runs; then the part fails (the last one in flight).
                _coordinator.Tell(new CancelGeneration(request.RequestId));
                Thread.Sleep(300);
                throw new IOException($"injected at {target}");
            }
        };

        var error = Assert.Throws<GenerationFailedException>(() =>
            _coordinator.Ask<GenerationResult>(request, TimeSpan.FromSeconds(10)).GetAwaiter().GetResult());
        Assert.IsAssignableFrom<OperationCanceledException>(error.InnerException);
        var run = Assert.Single(_backend.Runs);
        Assert.True(run.Disposed);
        AssertNextRequestSucceeds();
    }

    [Fact]
    public void A_tier_actor_failing_outside_a_task_should_be_stopped_and_replaced()
    {
        var disk = Tier(PipelineActorKind.DiskIo); // runs the first task, LoadWeight(0,0,0)
        Watch(disk);
        _backend.BreakTrace = true;

        var error = Assert.Throws<GenerationFailedException>(() => RunSync(Request()));
        ExpectTerminated(disk);
        Assert.NotNull(error.InnerException);
        Assert.All(_backend.Runs, r => Assert.True(r.Disposed));

        AssertNextRequestSucceeds();
        Assert.NotEqual(disk, Tier(PipelineActorKind.DiskIo));
    }

    [Theory]
    [InlineData(TaskKind.LoadWeight, 0, 0, 0)]
    [InlineData(TaskKind.ComputeLayer, 1, 2, 1)]
    [InlineData(TaskKind.StoreCache, 1, 3, 0)]
    public async Task Cancellation_at_any_point_should_fail_the_request_free_the_run_and_leave_the_system_usable(TaskKind kind, int i, int j, int k)
    {
        await using var flexgen = FlexGenSystem.Attach(Sys, _coordinator);
        using var cts = new CancellationTokenSource();
        var target = new BlockTask(kind, i, j, k);
        _backend.OnPart = (task, _) =>
        {
            if (task == target)
            {
                cts.Cancel();
            }
        };

        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => flexgen.GenerateAsync(Request(), cts.Token));
        Assert.Equal(cts.Token, error.CancellationToken);
        var run = Assert.Single(_backend.Runs);
        Assert.True(run.Disposed); // released before GenerateAsync returned
        Assert.DoesNotContain(run.Parts, p => p.Task.Kind == TaskKind.StoreHidden && p.Task.Token == 2 && p.Task.Layer == 5 && p.Task.Batch == 1);

        var result = await flexgen.GenerateAsync(Request(), CancellationToken.None);
        Assert.Equal(8, result.OutputIds.Length);
    }

    [Fact]
    public async Task A_request_whose_token_is_already_cancelled_should_fail_without_running()
    {
        await using var flexgen = FlexGenSystem.Attach(Sys, _coordinator);
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => flexgen.GenerateAsync(Request(), cts.Token));
        Assert.Equal(cts.Token, error.CancellationToken);
        Assert.All(_backend.Runs, r => Assert.True(r.Disposed));
        AssertNextRequestSucceeds();
    }

    [Fact]
    public async Task A_request_to_a_terminated_system_should_fail_instead_of_waiting_for_ever()
    {
        var policy = TestPolicies.Offloaded(2, overlap: true, sep: true, cpuCacheCompute: true);
        var flexgen = FlexGenSystem.Start(policy, _ => new RecordingBackend(policy, 2), name: "terminated");
        await flexgen.DisposeAsync();

        var error = await Assert.ThrowsAsync<GenerationFailedException>(() => flexgen.GenerateAsync(Request()).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.IsType<InvalidOperationException>(error.InnerException);
        Assert.Contains("terminated", error.Message);
    }

    [Fact]
    public async Task Cancelling_a_queued_request_should_fail_only_that_request()
    {
        await using var flexgen = FlexGenSystem.Attach(Sys, _coordinator);
        var gate = new ManualResetEventSlim();
        _backend.OnPart = (_, _) => gate.Wait(TimeSpan.FromSeconds(10));
        using var cts = new CancellationTokenSource();
        var first = flexgen.GenerateAsync(Request(gen: 1));
        var second = flexgen.GenerateAsync(Request(gen: 1), cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => second);
        gate.Set();
        var result = await first;
        Assert.Equal(8, result.OutputIds.Length);
        Assert.Single(_backend.Runs);
    }

    [Fact]
    public void Stopping_the_coordinator_should_stop_every_tier_actor_and_dispose_the_backend()
    {
        AssertNextRequestSucceeds();
        var tiers = Enum.GetValues<PipelineActorKind>().Select(Tier).ToArray();
        foreach (var tier in tiers)
        {
            Watch(tier);
        }

        Watch(_coordinator);
        Sys.Stop(_coordinator);
        var terminated = ReceiveN(tiers.Length + 1).Cast<Terminated>().Select(t => t.ActorRef).ToHashSet();
        Assert.Subset(terminated, tiers.Append(_coordinator).ToHashSet());
        Assert.True(_backend.Disposed);
    }

    [Fact]
    public void An_invalid_request_should_fail_with_a_typed_cause_naming_the_field()
    {
        var ragged = new GenerateRequest { PromptIds = [[5, 6], [7]], Generation = new(2) };
        var error = Assert.Throws<GenerationFailedException>(() => RunSync(ragged));
        Assert.IsType<ArgumentException>(error.InnerException);
        Assert.Contains("PromptIds[1]", error.InnerException!.Message);

        var cut = Request() with { CutGenLen = 4 };
        error = Assert.Throws<GenerationFailedException>(() => RunSync(cut));
        Assert.Contains("CutGenLen", error.InnerException!.Message);
        AssertNextRequestSucceeds();
    }

    [Fact]
    public async Task An_invalid_request_bringing_another_policy_should_be_rejected_before_a_model_is_loaded_for_it()
    {
        var policy = TestPolicies.Offloaded(2, overlap: true, sep: true, cpuCacheCompute: true);
        int built = 0;
        var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, p => { built++; return new RecordingBackend(p, 2); }), "counting");
        await coordinator.Ask<GenerationResult>(Request(), TimeSpan.FromSeconds(20));
        Assert.Equal(1, built);

        var ragged = new GenerateRequest
        {
            PromptIds = [[5, 6], [7]], Generation = new(2),
            Policy = TestPolicies.Offloaded(1, overlap: false, sep: false, cpuCacheCompute: false),
        };
        var error = await Assert.ThrowsAsync<GenerationFailedException>(() => coordinator.Ask<GenerationResult>(ragged, TimeSpan.FromSeconds(20)));
        Assert.Contains("PromptIds[1]", error.InnerException!.Message);
        Assert.Equal(1, built); // none loaded for the rejected request, and the loaded one was kept

        var result = await coordinator.Ask<GenerationResult>(Request(), TimeSpan.FromSeconds(20));
        Assert.Equal(8, result.OutputIds.Length);
        Assert.Equal(1, built);
    }

    private GenerationResult RunSync(GenerateRequest request)
    {
        try
        {
            return _coordinator.Ask<GenerationResult>(request, TimeSpan.FromSeconds(20)).GetAwaiter().GetResult();
        }
        finally
        {
            _backend.OnPart = null;
        }
    }
}
