namespace FlexGen.Host.Generation;

using FlexGen.Actors.Messages;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;

/// <summary>Output of one engine run: the new tokens of every row, and how the run went.</summary>
/// <param name="OutputIds">(rows, gen_len) generated token ids.</param>
public sealed record EngineRun(long[,] OutputIds, RunStatistics Statistics, IRunTimeline? Timeline);

/// <summary>
/// Runs a (rows, prompt_len) prompt matrix, left-padded with the model's pad id, through the model under the
/// policy: any number of rows, cut into blocks of gpu_batch_size x num_gpu_batches (the last one padded).
/// Runs are serialized. Implemented over the actor pipeline's coordinator.
/// </summary>
public interface IGenerationEngine
{
    ModelConfig Model { get; }

    Policy Policy { get; }

    /// <summary>gpu_batch_size x num_gpu_batches: the sequences one block computes together.</summary>
    int BlockSize => Policy.GpuBatchSize * Policy.NumGpuBatches;

    /// <param name="cutGenLen">Compute only this many of <see cref="GenerationSettings.GenLen"/> tokens (FlexGen's --cut-gen-len).</param>
    /// <param name="progress">Told of each token each block completes, in order; null: not reported.</param>
    Task<EngineRun> RunAsync(long[,] inputIds, GenerationSettings settings, int? cutGenLen, IProgress<GenerationProgress>? progress,
        CancellationToken cancellation);
}
