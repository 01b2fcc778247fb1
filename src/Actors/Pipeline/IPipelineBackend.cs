namespace FlexGen.Actors.Pipeline;

using System.Collections.Immutable;
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
    /// The plan of one block (placement of its cache and activations, routes, schedule), computed before anything is
    /// allocated. The coordinator builds it once per block, owns it, and hands it to <see cref="CreateRun"/>.
    /// </summary>
    /// <param name="prefetchSteps">How many compute steps the loads may run ahead (the pipeline's <c>prefetch-steps</c>):
    /// the plan's schedule carries it to the dispatcher (<see cref="ScheduleShape.PrefetchSteps"/>), and a backend that
    /// places tensors counts the buffers it keeps in flight.</param>
    BlockPlan Plan(BlockRequest block, int prefetchSteps);

    /// <summary>
    /// Prepares one block (gpu_batch_size * num_gpu_batches rows) of a request under <paramref name="plan"/>: caches,
    /// buffers, offload files. The run owns all of them and frees them in Dispose.
    /// </summary>
    IPipelineRun CreateRun(RunId id, BlockRequest block, BlockPlan plan, TraceRecorder trace);

    /// <summary>Peak bytes per memory tier since the last <see cref="ResetPeaks"/>.</summary>
    IReadOnlyDictionary<string, long> PeakBytes { get; }

    void ResetPeaks();
}

/// <summary>One block of one request: the id the tier protocol carries instead of the run itself.</summary>
public readonly record struct RunId(Guid RequestId, int Block)
{
    public override string ToString() => $"{RequestId:N}/{Block}";
}

/// <summary>
/// A block's schedule and routes (which pipeline actors run a part of each task). Backends that place tensors
/// extend it with their placement.
/// </summary>
public record BlockPlan(BlockSchedule Schedule, TaskRouter Router)
{
    /// <summary>The actors that run a part of <paramref name="task"/> (at least one).</summary>
    public IReadOnlyList<PipelineActorKind> Route(BlockTask task) => Router.Route(task);
}

/// <summary>What one task part did.</summary>
/// <param name="Bytes">Bytes it moved or read.</param>
/// <param name="StoppedAfterToken">
/// Set by the part after which every valid row of the block has emitted the stop token: later tokens would only be
/// pads and need not run.
/// </param>
/// <param name="Tokens">
/// The token ids the part wrote to the block's output (the last layer's StoreHidden), for the coordinator to report as
/// the token completes; null for every other part.
/// </param>
public readonly record struct PartResult(long Bytes, int? StoppedAfterToken = null, GeneratedTokens? Tokens = null);

/// <summary>
/// Token <see cref="Token"/> (0-based) of rows <see cref="FirstRow"/> .. FirstRow + Ids.Length - 1 of a block, as
/// written to its output (a row that emitted the stop token has pads after it). Immutable, compared by value.
/// </summary>
public sealed record GeneratedTokens(int Token, int FirstRow, ImmutableArray<long> Ids)
{
    public bool Equals(GeneratedTokens? other) =>
        other is not null && Token == other.Token && FirstRow == other.FirstRow && Ids.AsSpan().SequenceEqual(other.Ids.AsSpan());

    public override int GetHashCode() => HashCode.Combine(Token, FirstRow, Ids.Length);
}

/// <summary>One block of a request: exactly gpu_batch_size * num_gpu_batches rows (padded).</summary>
/// <param name="PromptIds">(rows, prompt_len).</param>
/// <param name="AttentionMask">(rows, prompt_len), true = real token.</param>
/// <param name="ValidRows">Rows that came from the request (the rest are padding).</param>
/// <param name="Generation">How the request generates (gen_len, sampling, stop token).</param>
/// <param name="ExecuteGenLen">Tokens actually run (cut_gen_len, else gen_len); the rest stay pad.</param>
public sealed record BlockRequest(
    Guid RequestId,
    int BlockIndex,
    ImmutableArray<ImmutableArray<long>> PromptIds,
    ImmutableArray<ImmutableArray<bool>> AttentionMask,
    int ValidRows,
    GenerationSettings Generation,
    int ExecuteGenLen)
{
    public int Rows => PromptIds.Length;

    public int PromptLen => PromptIds[0].Length;
}

/// <summary>
/// One block's execution: the task parts and the buffers between them. The pipeline actors find it by its
/// <see cref="Id"/> in the <see cref="RunRegistry"/> and call <see cref="Execute"/> from their own threads; the
/// coordinator guarantees that a part runs only after the parts it depends on completed.
/// </summary>
public interface IPipelineRun : IDisposable
{
    RunId Id { get; }

    BlockRequest Block { get; }

    /// <summary>Where the pipeline actors record what they ran (shared by all blocks of a request).</summary>
    TraceRecorder Trace { get; }

    /// <summary>Runs <paramref name="actor"/>'s part of <paramref name="task"/>.</summary>
    PartResult Execute(BlockTask task, PipelineActorKind actor);

    /// <summary>
    /// Frees what <paramref name="actor"/>'s part of <paramref name="task"/> was the last to use. Called by the actor
    /// after the part's work on its CUDA stream is complete, so no kernel or copy still reads what is freed.
    /// </summary>
    void Release(BlockTask task, PipelineActorKind actor);

    /// <summary>Set once the run is being abandoned: parts not yet started are skipped.</summary>
    bool IsCancelled { get; }

    void Cancel();

    /// <summary>(rows, gen_len) generated ids; valid after the last task completed.</summary>
    long[][] OutputIds();
}
