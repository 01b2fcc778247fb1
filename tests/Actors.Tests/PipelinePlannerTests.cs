namespace FlexGen.Actors.Tests;

using System.Collections.Immutable;
using Akka.Actor;
using Akka.Serialization;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Stages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Models;
using TorchSharp;

/// <summary>The layer ranges of a pipeline over several nodes, what refuses a plan, and the stage messages' binary form.</summary>
public class PipelinePlannerTests
{
    private static readonly ModelConfig OptTiny = ModelFamilies.FromConfigFile(Fixtures.Model);

    private static StageDescription Stage(string node, long? capacity = null, int gpuBatchSize = 4, long frame = 4 << 20) =>
        new(node, Fixtures.Policies()["all_gpu"] with { GpuBatchSize = gpuBatchSize }, capacity, frame);

    [Fact]
    public void Plan_should_cover_every_layer_once_with_contiguous_ranges_weighted_by_the_budgets()
    {
        var layers = OptTiny.Layers(sepLayer: true);
        var plan = PipelinePlanner.Plan(Guid.NewGuid(), OptTiny, [Stage("a", 1 << 30), Stage("b", 3L << 30)], maxPromptLen: 12, maxGenLen: 10);

        Assert.Equal(0, plan.Stages[0].Layers.First);
        Assert.Equal(plan.Stages[0].Layers.End, plan.Stages[1].Layers.First);
        Assert.Equal(layers.Count, plan.Stages[1].Layers.End);
        Assert.Equal(layers.Sum(l => l.WeightBytes), plan.Stages.Sum(s => s.WeightBytes));
        // The embedding (most of opt-tiny's bytes) goes to the first stage whatever its share: each stage keeps at least one layer.
        Assert.True(plan.Stages[1].Layers.Count >= 1);
    }

    [Fact]
    public void Plan_should_refuse_stages_that_disagree_on_the_gpu_batch_geometry_naming_both()
    {
        var e = Assert.Throws<PipelinePlanException>(() =>
            PipelinePlanner.Plan(Guid.NewGuid(), OptTiny, [Stage("a"), Stage("b", gpuBatchSize: 2)], maxPromptLen: 12, maxGenLen: 10));
        Assert.Contains("gpu_batch_size 4", e.Message);
        Assert.Contains("b has 2", e.Message);
    }

    [Fact]
    public void Plan_should_refuse_a_message_larger_than_a_stage_frame_with_the_numbers()
    {
        var e = Assert.Throws<PipelinePlanException>(() =>
            PipelinePlanner.Plan(Guid.NewGuid(), OptTiny, [Stage("a"), Stage("b", frame: 1 << 20)], maxPromptLen: 2000, maxGenLen: 10));
        long hidden = 4L * 2000 * OptTiny.HiddenSize * sizeof(float);
        Assert.Contains("b accepts 1,048,576 bytes", e.Message);
        Assert.Contains($"{StageMessageSerializer.InputBytes(hidden, 3):N0} bytes of message", e.Message);
    }

    [Fact]
    public void Plan_should_refuse_a_stage_whose_share_exceeds_its_budgets()
    {
        var e = Assert.Throws<PipelinePlanException>(() =>
            PipelinePlanner.Plan(Guid.NewGuid(), OptTiny, [Stage("a", capacity: 1000), Stage("b", capacity: 1000)], maxPromptLen: 12, maxGenLen: 10));
        Assert.Contains("its budgets allow 1,000 bytes", e.Message);
    }

    [Fact]
    public async Task Stage_messages_should_survive_the_binary_serializer_bit_for_bit()
    {
        using var system = ActorSystem.Create("stage-serializer");
        try
        {
            var serializer = new StageMessageSerializer((ExtendedActorSystem)system);
            using var hidden = torch.randn(4, 3, 8);
            var input = new StageInput(new RunId(Guid.NewGuid(), 2), new StageTensor(5, 1, TensorPayload.Of(hidden)));
            var done = new StageBlockDone(input.Run, 1, [[1L, 2L], [3L, 4L]],
                [new TraceEvent(PipelineActorKind.Copy, new BlockTask(TaskKind.StoreHidden, 1, 2, 0), TimeSpan.FromTicks(10), TimeSpan.FromTicks(30), 96)],
                new DateTime(2026, 12, 1, 0, 0, 0, DateTimeKind.Utc), ImmutableDictionary<string, long>.Empty.Add("gpu", 42));

            var readInput = (StageInput)serializer.FromBinary(serializer.ToBinary(input), serializer.Manifest(input));
            var readDone = (StageBlockDone)serializer.FromBinary(serializer.ToBinary(done), serializer.Manifest(done));

            Assert.Equal(input, readInput);
            using var back = readInput.Input.Payload.ToTensor();
            Assert.True(back.equal(hidden).all().item<bool>());
            Assert.Equal(done.OutputIds.Select(r => r.ToArray()), readDone.OutputIds.Select(r => r.ToArray()));
            Assert.Equal(done.Trace.ToArray(), readDone.Trace.ToArray());
            Assert.Equal(done.TraceOriginUtc, readDone.TraceOriginUtc);
            Assert.Equal(42, readDone.PeakBytes["gpu"]);
            Assert.Equal(StageMessageSerializer.InputBytes(input.Input.Payload.Bytes.Length, 3), serializer.ToBinary(input).Length);
        }
        finally
        {
            await system.Terminate();
        }
    }
}
