namespace FlexGen.Actors.Pipeline;

using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Policies;

/// <summary>
/// What the coordinator drives: a model whose weights sit in their tiers under one policy. Owned (and
/// disposed) by the coordinator; outlives requests.
/// </summary>
public interface IPipelineBackend : IDisposable
{
    Policy Policy { get; }

    /// <summary>The model's pad token id (default padding of prompts without a mask).</summary>
    int PadTokenId { get; }

    /// <summary>
    /// Prepares one block (gpu_batch_size * num_gpu_batches rows) of a request: caches, buffers, offload
    /// files. The run owns all of them and frees them in Dispose.
    /// </summary>
    IPipelineRun CreateRun(BlockRequest block, TraceRecorder trace);

    /// <summary>Peak bytes per memory tier since the last <see cref="ResetPeaks"/>.</summary>
    IReadOnlyDictionary<string, long> PeakBytes { get; }

    void ResetPeaks();
}

/// <summary>One block of a request: exactly gpu_batch_size * num_gpu_batches rows (padded).</summary>
/// <param name="PromptIds">(rows, prompt_len).</param>
/// <param name="AttentionMask">(rows, prompt_len), true = real token.</param>
/// <param name="ValidRows">Rows that came from the request (the rest are padding).</param>
public sealed record BlockRequest(
    Guid RequestId,
    int BlockIndex,
    long[][] PromptIds,
    bool[][] AttentionMask,
    int ValidRows,
    int GenLen,
    int ExecuteGenLen,
    SamplingOptions Sampling,
    int? StopTokenId)
{
    public int Rows => PromptIds.Length;

    public int PromptLen => PromptIds[0].Length;
}

/// <summary>
/// One block's execution: its schedule, which tiers run each task, and the task parts themselves. The tier
/// actors call <see cref="Execute"/> from their own threads; the coordinator guarantees that a part runs only
/// after the parts it depends on completed, so a run needs no locking of its buffers.
/// </summary>
public interface IPipelineRun : IDisposable
{
    BlockRequest Block { get; }

    BlockSchedule Schedule { get; }

    /// <summary>Where the tier actors record what they ran (shared by all blocks of a request).</summary>
    TraceRecorder Trace { get; }

    /// <summary>The tiers that run a part of <paramref name="task"/> (at least one).</summary>
    IReadOnlyList<PipelineActorKind> Route(BlockTask task);

    /// <summary>Runs <paramref name="tier"/>'s part of <paramref name="task"/>; returns the bytes it moved or read.</summary>
    long Execute(BlockTask task, PipelineActorKind tier);

    /// <summary>Set once the run is being abandoned: parts not yet started are skipped.</summary>
    bool IsCancelled { get; }

    void Cancel();

    /// <summary>
    /// The token after which every valid row of the block has emitted the stop token, so later tokens would only be
    /// pads and need not run; null while some row runs on (or without a stop token).
    /// </summary>
    int? StoppedAfterToken => null;

    /// <summary>(rows, gen_len) generated ids; valid after the last task completed.</summary>
    long[][] OutputIds();
}
