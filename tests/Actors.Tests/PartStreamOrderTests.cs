namespace FlexGen.Actors.Tests;

using System.Collections.Concurrent;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;

/// <summary>
/// GPU safety without a GPU: each pipeline actor's stream (a stand-in that records) is synchronised after a part ran and
/// before the run releases what that part used, so no queued kernel or copy can still read freed memory.
/// </summary>
public class PartStreamOrderTests : Akka.TestKit.Xunit2.TestKit
{
    public PartStreamOrderTests()
        : base(FlexGenHocon.Config, "part-streams")
    {
    }

    private sealed record Operation(PipelineActorKind Tier, string What, BlockTask? Task);

    /// <summary>Records its synchronisations (and disposal) in the shared log.</summary>
    private sealed class RecordingStream(PipelineActorKind tier, ConcurrentQueue<Operation> log) : IPartStream
    {
        public void Synchronize() => log.Enqueue(new Operation(tier, "sync", null));

        public void Dispose() => log.Enqueue(new Operation(tier, "dispose", null));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Every_part_should_synchronise_its_stream_after_it_ran_and_before_its_release(bool overlap)
    {
        var policy = TestPolicies.Offloaded(2, overlap, sep: true, cpuCacheCompute: true);
        var backend = new RecordingBackend(policy, numBlocks: 2);
        var log = new ConcurrentQueue<Operation>();
        backend.OnPart = (task, tier) => log.Enqueue(new Operation(tier, "execute", task));
        backend.OnRelease = (task, tier) => log.Enqueue(new Operation(tier, "release", task));
        var coordinator = Sys.ActorOf(GenerationCoordinator.PropsWithTiers(policy, _ => backend, null,
            (tier, runs) => PipelineActor.PropsFor(tier, runs, kind => new RecordingStream(kind, log))));

        await FlexGenSystem.Attach(Sys, coordinator).GenerateAsync(new GenerateRequest { PromptIds = TestPolicies.Prompts(16), Generation = new(3) })
            .WaitAsync(TimeSpan.FromSeconds(30));

        var parts = backend.Runs.SelectMany(r => r.Parts).ToArray();
        Assert.Equal(parts.Length, backend.Runs.Sum(r => r.Releases.Count));
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            // One actor runs its parts one after another: its operations are execute, sync, release per part, in order.
            var operations = log.Where(o => o.Tier == tier && o.What != "dispose").ToArray();
            int partsOfTier = parts.Count(p => p.Tier == tier);
            Assert.True(partsOfTier > 0, $"{tier.ActorName()} ran no part");
            Assert.Equal(3 * partsOfTier, operations.Length);
            for (int n = 0; n < operations.Length; n += 3)
            {
                Assert.Equal("execute", operations[n].What);
                Assert.Equal("sync", operations[n + 1].What);
                Assert.Equal(new Operation(tier, "release", operations[n].Task), operations[n + 2]);
            }
        }
    }
}
