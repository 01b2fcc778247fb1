namespace FlexGen.Actors.Tests;

using Akka.Actor;
using Akka.TestKit;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;

/// <summary>The coordinator with TestKit probes in place of its tier actors: the test plays every tier.</summary>
public class ProbeTierTests : Akka.TestKit.Xunit2.TestKit
{
    public ProbeTierTests()
        : base(FlexGenHocon.Config, "probes")
    {
    }

    /// <summary>Forwards everything to a probe, keeping the coordinator as the sender.</summary>
    private sealed class Forwarder : ReceiveActor
    {
        public Forwarder(IActorRef probe) => ReceiveAny(m => probe.Forward(m));
    }

    private (IActorRef Coordinator, Dictionary<PipelineActorKind, TestProbe> Probes, RecordingBackend Backend) Start(bool overlap)
    {
        var policy = TestPolicies.Offloaded(batches: 2, overlap, sep: true, cpuCacheCompute: true);
        var backend = new RecordingBackend(policy, numBlocks: 2);
        var probes = Enum.GetValues<PipelineActorKind>().ToDictionary(t => t, t => CreateTestProbe($"probe-{t.ActorName()}"));
        var coordinator = Sys.ActorOf(GenerationCoordinator.PropsWithTiers(policy, _ => backend, new PipelineSettings(MaxInFlightPerTier: 2),
            (tier, _) => Props.Create(() => new Forwarder(probes[tier].Ref))));
        return (coordinator, probes, backend);
    }

    [Fact]
    public void Overlap_off_should_hand_out_one_task_at_a_time_in_block_order()
    {
        var (coordinator, probes, backend) = Start(overlap: false);
        coordinator.Tell(new GenerateRequest { PromptIds = TestPolicies.Prompts(8), Generation = new(2) }, TestActor);
        var run = AwaitRun(backend);
        foreach (var scheduled in run.Schedule.Tasks)
        {
            var parts = run.Route(scheduled.Task);
            foreach (var tier in parts)
            {
                var work = probes[tier].ExpectMsg<ExecuteTask>(TimeSpan.FromSeconds(3));
                Assert.Equal(scheduled.Task, work.Task);
            }

            // Nothing else is handed out while this task is outstanding (the coordinator sends all it releases at once).
            Thread.Sleep(2);
            Assert.All(probes.Values, probe => Assert.False(probe.HasMessages, $"a task was handed out while {scheduled.Task} was outstanding"));

            foreach (var tier in parts)
            {
                coordinator.Tell(new TaskCompleted(run.Id, scheduled.Task, tier), probes[tier].Ref);
            }
        }

        ExpectMsg<GenerationResult>(TimeSpan.FromSeconds(3));
    }

    [Fact]
    public void Overlap_on_should_give_each_tier_its_tasks_in_block_order_and_never_more_than_two_at_once()
    {
        var (coordinator, probes, backend) = Start(overlap: true);
        coordinator.Tell(new GenerateRequest { PromptIds = TestPolicies.Prompts(8), Generation = new(3) }, TestActor);
        var run = AwaitRun(backend);
        var expected = Enum.GetValues<PipelineActorKind>().ToDictionary(t => t,
            t => new Queue<BlockTask>(run.Schedule.Tasks.Select(s => s.Task).Where(task => run.Route(task).Contains(t))));
        var outstanding = Enum.GetValues<PipelineActorKind>().ToDictionary(t => t, _ => new Queue<BlockTask>());
        int remaining = expected.Values.Sum(q => q.Count);
        while (remaining > 0)
        {
            bool any = false;
            foreach (var (tier, probe) in probes)
            {
                while (probe.HasMessages)
                {
                    var work = probe.ExpectMsg<ExecuteTask>();
                    Assert.Equal(expected[tier].Dequeue(), work.Task);
                    outstanding[tier].Enqueue(work.Task);
                    Assert.True(outstanding[tier].Count <= 2, $"{tier.ActorName()} has {outstanding[tier].Count} parts outstanding");
                    any = true;
                }
            }

            // Play each tier: answer its oldest outstanding part (a tier runs its parts in order).
            foreach (var (tier, queue) in outstanding)
            {
                if (queue.Count > 0)
                {
                    coordinator.Tell(new TaskCompleted(run.Id, queue.Dequeue(), tier), probes[tier].Ref);
                    remaining--;
                    any = true;
                }
            }

            if (!any)
            {
                // Nothing handed out and nothing to answer yet: wait for the coordinator.
                AwaitCondition(() => probes.Values.Any(p => p.HasMessages), TimeSpan.FromSeconds(3), TimeSpan.FromMilliseconds(1));
            }
        }

        ExpectMsg<GenerationResult>(TimeSpan.FromSeconds(3));
        Assert.All(expected.Values, q => Assert.Empty(q));
    }

    private static RecordingRun AwaitRun(RecordingBackend backend)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3);
        while (backend.Runs.IsEmpty && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(5);
        }

        return Assert.Single(backend.Runs);
    }
}
