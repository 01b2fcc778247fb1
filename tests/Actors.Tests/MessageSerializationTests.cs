namespace FlexGen.Actors.Tests;

using System.Collections.Immutable;
using System.Text;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Policies;

/// <summary>
/// Every message that may cross a process round-trips through the serializer Akka picks for it (Newtonsoft JSON with
/// type names): the copy has the same type and serializes to the same bytes (a structural comparison that also sees
/// inside immutable arrays), and the fields that validate on init come back as they were.
/// </summary>
public class MessageSerializationTests : Akka.TestKit.Xunit2.TestKit
{
    public MessageSerializationTests()
        : base(FlexGenHocon.Config, "serialization")
    {
    }

    private T RoundTrip<T>(T message)
        where T : notnull
    {
        var serializer = Sys.Serialization.FindSerializerFor(message);
        var bytes = serializer.ToBinary(message);
        var copy = serializer.FromBinary(bytes, message.GetType());
        Assert.IsType<T>(copy);
        Assert.Equal(Encoding.UTF8.GetString(bytes), Encoding.UTF8.GetString(serializer.ToBinary(copy)));
        return (T)copy;
    }

    private static readonly Policy Offloading = new()
    {
        GpuBatchSize = 4, NumGpuBatches = 3, WGpuPercent = 20, WCpuPercent = 50, CacheGpuPercent = 30, CacheCpuPercent = 70,
        ActGpuPercent = 0, ActCpuPercent = 100, CpuCacheCompute = true, Overlap = false, AttnSparsity = 0.5,
        CompressCache = true, CompCacheConfig = new CompressionConfig(4, 32, 2, false, true),
    };

    [Fact]
    public void A_generate_request_should_round_trip_with_its_policy_sampling_rows_and_progress_address()
    {
        var request = new GenerateRequest
        {
            PromptIds = TestPolicies.Prompts(3, 4),
            AttentionMask = new[] { new[] { false, true, true, true }, new[] { true, true, true, true }, new[] { false, false, true, true } }.ToRows(),
            PadTokenId = 1,
            Generation = new GenerationSettings(7) { StopTokenId = 2, Sampling = new SamplingOptions(true, 0.7, 42, topK: 8, topP: 0.95) },
            CutGenLen = 5,
            Policy = Offloading,
            ProgressTo = TestActor,
        };

        var copy = RoundTrip(request);

        Assert.Equal(request.PromptIds.SelectMany(r => r), copy.PromptIds.SelectMany(r => r));
        Assert.Equal(request.AttentionMask!.Value.SelectMany(r => r), copy.AttentionMask!.Value.SelectMany(r => r));
        Assert.Equal(request.Policy, copy.Policy);
        Assert.Equal(request.Generation, copy.Generation);
        Assert.Equal(TestActor, copy.ProgressTo);
        Assert.Equal(request.RequestId, copy.RequestId);
        Assert.Null(RoundTrip(request with { AttentionMask = null, Policy = null, ProgressTo = null }).AttentionMask);
    }

    [Fact]
    public void A_result_should_round_trip_with_its_rows_timings_peaks_and_trace()
    {
        var trace = new ExecutionTrace(
        [
            new TraceEvent(PipelineActorKind.DiskIo, new BlockTask(TaskKind.LoadWeight, 0, 1, 0), TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(3), 4096),
            new TraceEvent(PipelineActorKind.GpuCompute, new BlockTask(TaskKind.ComputeLayer, 0, 1, 1), TimeSpan.FromMilliseconds(3), TimeSpan.FromMilliseconds(9), 100),
        ]);
        var result = new GenerationResult(Guid.NewGuid(), TestPolicies.Prompts(2, 5), new PhaseTimings(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2)),
            ImmutableDictionary<string, long>.Empty.Add("gpu", 10).Add("cpu", 20).Add("disk", 0), trace);

        var copy = RoundTrip(result);

        Assert.Equal(result.OutputIds.SelectMany(r => r), copy.OutputIds.SelectMany(r => r));
        Assert.Equal(result.Timings, copy.Timings);
        Assert.Equal(result.PeakBytes.OrderBy(p => p.Key), copy.PeakBytes.OrderBy(p => p.Key));
        Assert.Equal(trace.Events.ToArray(), copy.Trace.Events.ToArray());
    }

    [Fact]
    public void The_progress_and_cancel_messages_should_round_trip()
    {
        var progress = new GenerationProgress(Guid.NewGuid(), 1, 3, 2, 5, TimeSpan.FromMilliseconds(12.5));
        Assert.Equal(progress, RoundTrip(progress));
        var streamed = progress with { NewTokens = new GeneratedTokens(1, 0, [7, 2, 50256]) };
        Assert.Equal(streamed, RoundTrip(streamed));
        Assert.NotEqual(streamed, streamed with { NewTokens = new GeneratedTokens(1, 0, [7, 2, 3]) });
        var cancel = new CancelGeneration(Guid.NewGuid());
        Assert.Equal(cancel, RoundTrip(cancel));
    }

    [Fact]
    public void The_tier_protocol_should_round_trip_ids_and_causes()
    {
        var run = new RunId(Guid.NewGuid(), 2);
        var task = new BlockTask(TaskKind.StoreCache, 3, 4, 1);
        Assert.Equal(new ExecuteTask(run, task, PipelineActorKind.Copy), RoundTrip(new ExecuteTask(run, task, PipelineActorKind.Copy)));
        Assert.Equal(new TaskCompleted(run, task, PipelineActorKind.DiskIo, 123, 2), RoundTrip(new TaskCompleted(run, task, PipelineActorKind.DiskIo, 123, 2)));
        var storeHidden = new BlockTask(TaskKind.StoreHidden, 3, 11, 1);
        var withTokens = new TaskCompleted(run, storeHidden, PipelineActorKind.GpuCompute, 16, null, new GeneratedTokens(3, 2, [11, 12]));
        Assert.Equal(withTokens, RoundTrip(withTokens));
        Assert.Equal(new long[] { 11, 12 }, RoundTrip(withTokens).Tokens!.Ids.ToArray());
        Assert.Equal(new TaskSkipped(run, task, PipelineActorKind.CpuCompute), RoundTrip(new TaskSkipped(run, task, PipelineActorKind.CpuCompute)));

        var failed = RoundTrip(new TaskFailed(run, task, PipelineActorKind.GpuCompute, new IOException("disk gone")));
        Assert.Equal((run, task, PipelineActorKind.GpuCompute), (failed.Run, failed.Task, failed.Actor));
        Assert.IsType<IOException>(failed.Cause);
        Assert.Equal("disk gone", failed.Cause.Message);
    }

    [Fact]
    public void Settings_records_that_validate_on_init_should_round_trip()
    {
        Assert.Equal(Offloading, RoundTrip(Offloading));
        Assert.Equal(new SamplingOptions(true, 1.5, 7), RoundTrip(new SamplingOptions(true, 1.5, 7)));
        Assert.Equal(new SamplingOptions(true, 0.8, 7, topK: 40, topP: 0.9), RoundTrip(new SamplingOptions(true, 0.8, 7, topK: 40, topP: 0.9)));
        Assert.Equal(new PipelineSettings(3, 2), RoundTrip(new PipelineSettings(3, 2)));
    }

    [Fact]
    public void Generation_settings_should_round_trip_with_the_values_Akka_JSON_drops_as_defaults()
    {
        // Akka's JSON leaves out default values (false, 0, null): what comes back must still be what was sent.
        foreach (var settings in new[]
                 {
                     new GenerationSettings(1),
                     new GenerationSettings(5) { StopTokenId = 0, Sampling = new SamplingOptions(true, 0) },
                     new GenerationSettings(9) { StopTokenId = 2, Sampling = new SamplingOptions(false, 2.5, 0) },
                     new GenerationSettings(3) { Sampling = new SamplingOptions(true, 1, 0, topK: 1, topP: 1) },
                     new GenerationSettings(4) { Sampling = new SamplingOptions(true, 0.5, null, topK: 5) },
                     new GenerationSettings(4) { Sampling = new SamplingOptions(true, 1, 3, topP: 0.25) },
                 })
        {
            Assert.Equal(settings, RoundTrip(settings));
            var request = new GenerateRequest { PromptIds = TestPolicies.Prompts(1, 3), Generation = settings };
            Assert.Equal(settings, RoundTrip(request).Generation);
        }
    }
}
