namespace FlexGen.Actors.Tests;

using Akka.Configuration;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;

/// <summary>
/// A whole generation on the real backend with every actor message serialized and deserialized on its way
/// (akka.actor.serialize-messages = on: what crosses a process must survive it), against the same run without.
/// </summary>
public class SerializedProtocolTests
{
    [Fact]
    public async Task A_generation_with_serialized_messages_should_equal_the_same_generation_without()
    {
        // Two blocks of two GPU batches of two rows; weights split GPU/CPU/disk, cache over three tiers with CPU
        // attention, activations on CPU, overlap: every tier actor gets parts, and every protocol message flows.
        var policy = new Policy
        {
            GpuBatchSize = 2, NumGpuBatches = 2, WGpuPercent = 20, WCpuPercent = 40, CacheGpuPercent = 50, CacheCpuPercent = 0,
            ActGpuPercent = 0, ActCpuPercent = 100, CpuCacheCompute = true, Overlap = true, SepLayer = true,
        };

        var plain = await Generate(policy, serializeMessages: false);
        var serialized = await Generate(policy, serializeMessages: true);

        Assert.Equal(8, serialized.Result.OutputIds.Length);
        Assert.Equal(plain.Result.OutputIds.Select(r => r.ToArray()), serialized.Result.OutputIds.Select(r => r.ToArray()));
        Assert.Equal(plain.Result.Trace.Events.Select(e => $"{e.Actor} {e.Task}").Order(), serialized.Result.Trace.Events.Select(e => $"{e.Actor} {e.Task}").Order());
        Assert.Equal(plain.Result.PeakBytes.Keys.Order(), serialized.Result.PeakBytes.Keys.Order());
        var expectedReports = Enumerable.Range(0, 2).SelectMany(b => Enumerable.Range(1, 5).Select(t => (b, t))).ToArray();
        Assert.Equal(expectedReports, plain.Reports.Select(r => (r.Block, r.Token)));
        Assert.Equal(expectedReports, serialized.Reports.Select(r => (r.Block, r.Token)));
        Assert.All(serialized.Reports, r => Assert.Equal(serialized.Result.RequestId, r.RequestId));

        // Each report carries the block's new token of each valid row, streamed from the StoreHidden parts through
        // TaskCompleted: together, in order, they are the result's ids.
        foreach (var (result, reports) in new[] { plain, serialized })
        {
            Assert.All(reports, r => Assert.Equal(r.Token - 1, r.NewTokens!.Token));
            var streamed = Enumerable.Range(0, 8)
                .Select(row => reports.Where(r => r.Block == row / 4).Select(r => r.NewTokens!.Ids[row % 4]).ToArray()).ToArray();
            Assert.Equal(result.OutputIds.Select(r => r.ToArray()), streamed);
        }
    }

    private static async Task<(GenerationResult Result, IReadOnlyList<GenerationProgress> Reports)> Generate(Policy policy, bool serializeMessages)
    {
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var config = ConfigurationFactory.ParseString($"""
                akka.actor.serialize-messages = {(serializeMessages ? "on" : "off")}
                akka.actor.serialize-creators = off
                akka.loglevel = WARNING
                """);
            var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = offload };
            await using var flexgen = FlexGenSystem.Start(settings, serializeMessages ? "serialized" : "by-reference", config);
            Assert.Equal(serializeMessages, flexgen.System.Settings.SerializeAllMessages);
            var progress = new CollectingProgress();
            var request = new GenerateRequest { PromptIds = Fixtures.PromptIds().ToRows(), AttentionMask = Fixtures.PromptMask().ToRows(), Generation = new(5) };
            var result = await flexgen.GenerateAsync(request, progress).WaitAsync(TimeSpan.FromMinutes(2));
            return (result, progress.Reports);
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }
}
