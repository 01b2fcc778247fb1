namespace FlexGen.Host.Generation;

using FlexGen.Actors.Messages;
using FlexGen.Tensors.Layers;

/// <summary>One request's result.</summary>
/// <param name="PromptIds">The prompt as submitted (token ids, BOS included for text prompts).</param>
/// <param name="OutputIds">The generated token ids (gen_len of them).</param>
/// <param name="Text">The generated text, when the model has a tokenizer.</param>
/// <param name="Block">Statistics of the engine run that computed this sequence (shared with its batch mates).</param>
public sealed record GeneratedSequence(IReadOnlyList<long> PromptIds, IReadOnlyList<long> OutputIds, string? Text, RunStatistics Block);

/// <summary>One generated token of a request, as it is produced.</summary>
/// <param name="Index">Its position in the output (0-based).</param>
/// <param name="Id">Its id.</param>
public readonly record struct GeneratedToken(int Index, long Id);

/// <summary>Result of a whole prompt matrix.</summary>
/// <param name="OutputIds">(n, gen_len) generated ids.</param>
/// <param name="Texts">Generated text per row, when the model has a tokenizer.</param>
public sealed record BatchGeneration(long[,] OutputIds, IReadOnlyList<string>? Texts, RunStatistics Statistics, IRunTimeline? Timeline);

/// <summary>
/// Generation for a host application: queues concurrent requests, packs them into GPU batches (blocks of
/// gpu_batch_size x num_gpu_batches), and returns every caller its own output.
/// </summary>
public interface IGenerationService
{
    /// <summary>Generates after a prompt of token ids (not padded; padding is the service's job).</summary>
    Task<GeneratedSequence> GenerateAsync(IReadOnlyList<long> promptIds, GenerationSettings? settings = null,
        CancellationToken cancellation = default);

    /// <summary>
    /// As <see cref="GenerateAsync(IReadOnlyList{long}, GenerationSettings?, CancellationToken)"/>, telling
    /// <paramref name="tokens"/> of each generated token as the engine produces it (once the step that computes it has
    /// run for the whole block), in order: every position 0 .. gen_len - 1 exactly once, all before the task completes,
    /// the same ids as the result's <see cref="GeneratedSequence.OutputIds"/> (pads after a stop token). Called on the
    /// engine's thread: keep it quick.
    /// </summary>
    Task<GeneratedSequence> GenerateAsync(IReadOnlyList<long> promptIds, GenerationSettings? settings, IProgress<GeneratedToken> tokens,
        CancellationToken cancellation = default);

    /// <summary>Generates after a text prompt (needs vocab.json and merges.txt in the model folder).</summary>
    Task<GeneratedSequence> GenerateAsync(string prompt, GenerationSettings? settings = null,
        CancellationToken cancellation = default);

    /// <summary>
    /// Generates for every row of a (n, prompt_len) prompt matrix left-padded with the pad id, as one run: rows
    /// go through in order, in blocks of the policy's size (the last block padded), FlexGen's benchmark shape.
    /// </summary>
    /// <param name="cutGenLen">Compute only this many tokens (FlexGen's --cut-gen-len); the rest of each row stays pad.</param>
    /// <param name="progress">Told of each token each block completes, in order (on the engine's thread: keep it quick).</param>
    Task<BatchGeneration> GenerateBatchAsync(long[,] inputIds, GenerationSettings? settings = null, int? cutGenLen = null,
        IProgress<GenerationProgress>? progress = null, CancellationToken cancellation = default);

    /// <summary>Encodes a text prompt (BOS first); null when the model has no tokenizer.</summary>
    IReadOnlyList<long>? Encode(string prompt);

    /// <summary>Whether text prompts work (the model folder has a tokenizer).</summary>
    bool HasTokenizer { get; }
}
