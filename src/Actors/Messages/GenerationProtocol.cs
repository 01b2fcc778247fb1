namespace FlexGen.Actors.Messages;

using System.Collections.Immutable;
using Akka.Actor;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Policies;
using Newtonsoft.Json;

// The request/response protocol of GenerationCoordinator (see FlexGenSystem for the public entry point).
//
//   coordinator.Ask<GenerationResult>(new GenerateRequest { ... }, timeout, cancellationToken)
//     -> GenerationResult, or a failed task whose exception is GenerationFailedException (InnerException =
//        the cause: the tier actor's exception, OperationCanceledException, a validation error).
//   coordinator.Tell(new CancelGeneration(requestId)) stops a queued or running request; FlexGenSystem.GenerateAsync
//     sends it when its CancellationToken fires.
//   GenerateRequest.ProgressTo receives a GenerationProgress per token per block, in order, with the block's new token ids.
// Requests queue in the coordinator and run one at a time in arrival order; each run frees all its buffers and
// deletes its offload files before its reply is sent. Every message here is immutable data (ids, immutable
// collections, an actor's address) and may cross a process.

/// <summary>
/// Generate tokens after each prompt as <see cref="Generation"/> says (length, sampling, stop token). Prompts are token ids of equal length (left-padded);
/// which positions are real comes from <see cref="AttentionMask"/> (true = real) or, without it, from
/// <see cref="PadTokenId"/> (default: the model's pad id). Any number of prompts: they are cut into blocks of
/// gpu_batch_size * num_gpu_batches and the last block is padded; padding never reaches the output.
/// </summary>
public sealed record GenerateRequest
{
    /// <summary>(n, prompt_len) token ids.</summary>
    public required ImmutableArray<ImmutableArray<long>> PromptIds { get; init; }

    /// <summary>(n, prompt_len), true = real token; null: every id != <see cref="PadTokenId"/>.</summary>
    public ImmutableArray<ImmutableArray<bool>>? AttentionMask { get; init; }

    public int? PadTokenId { get; init; }

    /// <summary>How to generate: length, sampling, stop token (validated when made).</summary>
    public required GenerationSettings Generation { get; init; }

    /// <summary>Run only this many of the <see cref="GenerationSettings.GenLen"/> tokens (FlexGen's cut_gen_len); the rest stay pad.</summary>
    public int? CutGenLen { get; init; }

    /// <summary>The policy for this request; null: the system's default.</summary>
    public Policy? Policy { get; init; }

    public Guid RequestId { get; init; } = Guid.NewGuid();

    /// <summary>
    /// Receives a <see cref="GenerationProgress"/> for each token every block completes, in order; null: none sent.
    /// FlexGenSystem.GenerateAsync bridges an <see cref="IProgress{T}"/> to this with a local actor.
    /// </summary>
    public IActorRef? ProgressTo { get; init; }
}

/// <summary>
/// A request's progress: block <see cref="Block"/> (0-based) of <see cref="Blocks"/> has completed
/// <see cref="Token"/> of its <see cref="Tokens"/> tokens (every task of those tokens done). Sent once per token
/// per block, in order; each block's last report has Token == Tokens (also when a stop token ended it early).
/// </summary>
/// <param name="Tokens">Tokens each block runs: cut_gen_len when given, else gen_len.</param>
/// <param name="Elapsed">Time since the request started.</param>
/// <param name="NewTokens">
/// The block's token Token - 1 (0-based) of each valid row, rows 0.. of the block (request row = Block x block size +
/// row), as the engine wrote it: the token streamed as it is produced. A row that emitted the stop token has pads after
/// it. Null when the backend did not hand the ids over with the part (the result still holds them). When a stop token
/// ended the block early, the last report (Token == Tokens) follows the stopping token's and carries the pads of the
/// last position; the positions between are pads too.
/// </param>
public sealed record GenerationProgress(Guid RequestId, int Block, int Blocks, int Token, int Tokens, TimeSpan Elapsed,
    GeneratedTokens? NewTokens = null)
{
    /// <summary>Block-tokens done over the whole request.</summary>
    public int Done => Block * Tokens + Token;

    /// <summary>Block-tokens of the whole request (<see cref="Blocks"/> x <see cref="Tokens"/>).</summary>
    public int Total => Blocks * Tokens;
}

/// <summary>Stop a queued or running request (it then fails with OperationCanceledException as the cause).</summary>
public sealed record CancelGeneration(Guid RequestId);

/// <summary>Wall time of the prefill (token 0) and decode (tokens 1..) phases, summed over blocks.</summary>
public sealed record PhaseTimings(TimeSpan Prefill, TimeSpan Decode)
{
    public TimeSpan Total => Prefill + Decode;
}

/// <summary>The answer to a <see cref="GenerateRequest"/>.</summary>
/// <param name="OutputIds">(n, gen_len) generated ids, one row per prompt.</param>
/// <param name="PeakBytes">Peak bytes in use per memory tier ("gpu", "cpu", "disk") during this request: the resident
/// weights plus the request's cache and buffers at their highest (measured from the request's start).</param>
/// <param name="Trace">Every task every tier ran (Chrome trace JSON via <see cref="ExecutionTrace.WriteChromeJson(string)"/>).</param>
public sealed record GenerationResult(
    Guid RequestId,
    ImmutableArray<ImmutableArray<long>> OutputIds,
    PhaseTimings Timings,
    [property: JsonProperty(IsReference = false)] // Akka's JSON keeps object references, which an immutable dictionary cannot take
    ImmutableDictionary<string, long> PeakBytes,
    ExecutionTrace Trace);

/// <summary>The request failed; <see cref="Exception.InnerException"/> is the cause.</summary>
public sealed class GenerationFailedException : Exception
{
    public GenerationFailedException(Guid requestId, string message, Exception cause)
        : base(message, cause)
    {
        RequestId = requestId;
    }

    public Guid RequestId { get; }
}
