namespace FlexGen.Actors.Stages;

using System.Collections.Immutable;
using FlexGen.Actors.Messages;
using FlexGen.Tensors.Models;

/// <summary>A pipeline over several nodes cannot be formed as asked (with the numbers that refuse it).</summary>
public sealed class PipelinePlanException(string message) : Exception(message);

/// <summary>
/// Plans which contiguous layers each stage holds: by weight bytes, in proportion to what each stage's tier budgets allow
/// (equal shares when a stage has no budget set), every stage at least one layer; a stage whose share exceeds its budgets,
/// stages that disagree on the GPU batch geometry, and messages larger than a node's frame are refused with the numbers.
/// </summary>
public static class PipelinePlanner
{
    /// <summary>The largest frame any node is asked to take (Akka.Remote's frames are int32-sized; beyond this is a misconfiguration).</summary>
    public const long FrameLimitBytes = 1L << 30;

    /// <summary>Room for a message's envelope (recipient and sender paths, manifest) on top of its serialized body.</summary>
    private const long EnvelopeBytes = 64 << 10;

    /// <summary>The floor of the frame size (flexgen-cluster.conf's maximum-frame-size): control messages and small plans.</summary>
    public const long MinFrameBytes = 4L << 20;

    /// <summary>
    /// The largest message between stages a request of at most <paramref name="maxPromptLen"/> prompt tokens and
    /// <paramref name="maxGenLen"/> new tokens makes: a prefill hidden state (gpu_batch_size x prompt_len x hidden, float32
    /// at most) or a stage's result (the block's ids and trace events).
    /// </summary>
    public static long LargestMessageBytes(ModelConfig config, int gpuBatchSize, int numGpuBatches, int layers, int maxPromptLen, int maxGenLen)
    {
        long hidden = StageMessageSerializer.InputBytes((long)gpuBatchSize * maxPromptLen * config.HiddenSize * sizeof(float), rank: 3);
        long rows = (long)gpuBatchSize * numGpuBatches;
        // Each (token, layer, GPU batch) step runs at most 6 task kinds, each at most on two actors; 44 bytes per event.
        long result = (rows * (4 + (maxGenLen * sizeof(long)))) + ((long)maxGenLen * layers * numGpuBatches * 6 * 2 * 44) + 1024;
        return Math.Max(hidden, result);
    }

    /// <summary>The frame size that carries <paramref name="largestMessageBytes"/> (never below <see cref="MinFrameBytes"/>).</summary>
    public static long FrameBytesFor(long largestMessageBytes) => Math.Max(MinFrameBytes, largestMessageBytes + EnvelopeBytes);

    /// <param name="stages">The stages' descriptions, the first stage (the coordinating node) first.</param>
    public static PipelinePlan Plan(Guid pipelineId, ModelConfig config, IReadOnlyList<StageDescription> stages, int maxPromptLen, int maxGenLen)
    {
        var first = stages[0].Policy;
        foreach (var stage in stages.Skip(1))
        {
            if (stage.Policy.GpuBatchSize != first.GpuBatchSize || stage.Policy.NumGpuBatches != first.NumGpuBatches || stage.Policy.SepLayer != first.SepLayer)
            {
                throw new PipelinePlanException(
                    $"GPU batches flow stage to stage, so every stage needs the first stage's gpu_batch_size {first.GpuBatchSize}, num_gpu_batches {first.NumGpuBatches} and sep_layer {first.SepLayer}; " +
                    $"{stage.Node} has {stage.Policy.GpuBatchSize}, {stage.Policy.NumGpuBatches} and {stage.Policy.SepLayer}");
            }
        }

        var layers = config.Layers(first.SepLayer);
        if (layers.Count < stages.Count)
        {
            throw new PipelinePlanException($"{config.Name} has {layers.Count} layers: too few for {stages.Count} stages of at least one layer each");
        }

        long largest = LargestMessageBytes(config, first.GpuBatchSize, first.NumGpuBatches, layers.Count, maxPromptLen, maxGenLen);
        long frame = FrameBytesFor(largest);
        if (frame > FrameLimitBytes)
        {
            throw new PipelinePlanException(
                $"the largest message between stages would be {largest:N0} bytes (prompt_len {maxPromptLen} x gpu_batch_size {first.GpuBatchSize} x hidden {config.HiddenSize}); " +
                $"frames are limited to {FrameLimitBytes:N0} bytes: use shorter prompts or a smaller gpu_batch_size");
        }

        foreach (var stage in stages.Where(s => s.MaxFrameBytes < frame))
        {
            throw new PipelinePlanException(
                $"the largest message between stages needs a {frame:N0}-byte frame ({largest:N0} bytes of message); {stage.Node} accepts {stage.MaxFrameBytes:N0} bytes " +
                "(raise its maximum-frame-size: flexgen worker --max-frame-mb)");
        }

        var ranges = Split(layers.Select(l => l.WeightBytes).ToArray(), Shares(stages));
        var planned = ImmutableArray.CreateBuilder<PlannedStage>(stages.Count);
        for (int s = 0; s < stages.Count; s++)
        {
            var range = new LayerRange(ranges[s].First, ranges[s].Count, layers.Count);
            long bytes = layers.Skip(range.First).Take(range.Count).Sum(l => l.WeightBytes);
            if (stages[s].CapacityBytes is { } capacity && bytes > capacity)
            {
                throw new PipelinePlanException(
                    $"stage {s} on {stages[s].Node} would hold {range} with {bytes:N0} weight bytes; its budgets allow {capacity:N0} bytes in all");
            }

            planned.Add(new PlannedStage(s, stages[s].Node, range, bytes, stages[s].Policy));
        }

        return new PipelinePlan(pipelineId, planned.MoveToImmutable(), largest, frame);
    }

    /// <summary>Each stage's share of the weights: its budget's share of all budgets, or equal when any stage has none.</summary>
    private static double[] Shares(IReadOnlyList<StageDescription> stages) =>
        stages.All(s => s.CapacityBytes is > 0)
            ? stages.Select(s => (double)s.CapacityBytes!.Value / stages.Sum(t => (double)t.CapacityBytes!.Value)).ToArray()
            : stages.Select(_ => 1.0 / stages.Count).ToArray();

    /// <summary>Contiguous ranges whose byte sums follow <paramref name="shares"/> as closely as whole layers allow (each at least one layer).</summary>
    private static (int First, int Count)[] Split(long[] layerBytes, double[] shares)
    {
        long total = layerBytes.Sum();
        var ranges = new (int First, int Count)[shares.Length];
        int next = 0;
        double target = 0;
        long cumulative = 0;
        for (int s = 0; s < shares.Length; s++)
        {
            target += shares[s] * total;
            int first = next;
            int mustLeave = shares.Length - s - 1; // one layer for each later stage
            do
            {
                cumulative += layerBytes[next++];
            }
            while (next < layerBytes.Length - mustLeave && (s == shares.Length - 1 || Math.Abs(cumulative + layerBytes[next] - target) < Math.Abs(cumulative - target)));

            ranges[s] = (first, next - first);
        }

        return ranges;
    }
}
