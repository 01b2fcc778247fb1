namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.Diagnostics;
using FlexGen.Actors.Messages;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Host.Text;
using FlexGen.Tensors.Layers;

/// <summary>Prompts that run as one engine run: one gen_len (and stop token), left-padded to the longest.</summary>
public sealed record BatchBlock(IReadOnlyList<BatchPrompt> Prompts, GenerationSettings Settings);

/// <summary>What <c>generate --prompts-file ... --output ...</c> was given.</summary>
/// <param name="SettingsOf">A prompt's generation settings (its max_tokens, the sampling and stop flags).</param>
/// <param name="StopStrings">--stop-string: each line's text is cut where the first begins, its ids after the token that
/// completes it written as the pad id (as <c>generate</c> prints them).</param>
public sealed record BatchJobRequest(
    string PromptsPath,
    string OutputPath,
    FlexGenOptions Options,
    ResolvedModel Model,
    BpeTokenizer? Tokenizer,
    int DefaultMaxTokens,
    Func<BatchPrompt, GenerationSettings> SettingsOf,
    bool Warmup,
    string? TracePath,
    IReadOnlyList<string> StopStrings);

/// <summary>
/// A resumable batch job: reads and checks every line of the prompts file (<see cref="PromptsFile"/>), skips the ids the
/// output file already holds (<see cref="BatchOutputFile"/>), sorts the rest into blocks of the policy's size (grouped by
/// settings, shortest prompts first, so that a block pads little), runs them one engine run per block through
/// <see cref="IGenerationService.GenerateBatchAsync"/> and appends each block's lines as it finishes.
/// </summary>
public static class BatchJob
{
    /// <summary>
    /// Blocks of up to <paramref name="blockSize"/> prompts: one per chunk of each group of equal settings (max_tokens and stop
    /// token: the engine runs one gen_len per block), groups by gen_len, prompts in a group by length.
    /// </summary>
    public static IReadOnlyList<BatchBlock> Plan(IEnumerable<BatchPrompt> prompts, int blockSize, Func<BatchPrompt, GenerationSettings> settingsOf)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        return prompts
            .GroupBy(settingsOf)
            .OrderBy(g => g.Key.GenLen).ThenBy(g => g.Key.StopTokenId ?? -1)
            .SelectMany(g => g.OrderBy(p => p.PromptIds.Length).ThenBy(p => p.Line).Chunk(blockSize)
                .Select(chunk => new BatchBlock(chunk, g.Key)))
            .ToList();
    }

    public static async Task<int> RunAsync(ParseResult parse, CliConsole console, BatchJobRequest request, CancellationToken cancellation)
    {
        var prompts = PromptsFile.Read(request.PromptsPath, request.Model, request.Tokenizer, request.DefaultMaxTokens);
        using var output = BatchOutputFile.Open(request.OutputPath);
        if (output.TruncatedBytes > 0)
            console.Error.WriteLine(
                $"{BatchOutputFile.Flag} {request.OutputPath}: removed a partial last line ({output.TruncatedBytes} bytes) left by an interrupted writer");
        var todo = prompts.Where(p => !output.DoneIds.Contains(p.Id)).ToList();
        int already = prompts.Count - todo.Count;
        if (todo.Count == 0)
        {
            console.Output.WriteLine($"batch: all {prompts.Count} prompts are already in {output.FullPath}; nothing to run");
            return ExitCodes.Success;
        }

        var clock = Stopwatch.StartNew();
        var geometry = (todo.Max(p => p.PromptIds.Length), todo.Max(p => p.MaxTokens));
        return await FlexGenCli.RunWithRuntimeAsync(parse, console, request.Options, request.Model, geometry, async runtime =>
        {
            console.Output.WriteLine(GenerationFlags.Describe(runtime));
            int blockSize = runtime.Policy.GpuBatchSize * runtime.Policy.NumGpuBatches;
            var blocks = Plan(todo, blockSize, request.SettingsOf);
            if (request.Warmup)
            {
                console.Error.WriteLine("warmup: 1 token");
                await runtime.Service.GenerateBatchAsync(Matrix(blocks[0], request.Model), new GenerationSettings(1), cutGenLen: null, progress: null, cancellation);
            }
            console.Error.WriteLine(
                $"generate: {prompts.Count} prompts, {already} already in {output.FullPath}, {todo.Count} to run in {blocks.Count} blocks of up to {blockSize} ...");

            var generation = Stopwatch.StartNew();
            long tokens = 0;
            int done = already;
            var peaks = new Dictionary<string, long>(StringComparer.Ordinal);
            IRunTimeline? lastTimeline = null;
            double Rate() => generation.Elapsed.TotalSeconds > 0 ? Interlocked.Read(ref tokens) / generation.Elapsed.TotalSeconds : 0;
            using (var progress = console.Progress("generate", prompts.Count, "prompts", announce: false))
            {
                progress.Report(already);
                // The next block is queued before this one's lines are written: the engine does not wait for the file.
                // Within a block: its tokens as the detail (a block of a large model may take minutes).
                Task<BatchGeneration> StartBlock(int b) => Start(runtime.Service, blocks[b], request.Model, new TokenProgress(p =>
                    progress.Report(Volatile.Read(ref done), $"block {b + 1}/{blocks.Count} token {p.Token}/{p.Tokens}, {Rate():F1} token/s")), cancellation);
                Task<BatchGeneration>? next = StartBlock(0);
                try
                {
                    for (int b = 0; b < blocks.Count; b++)
                    {
                        var result = await next!;
                        next = b + 1 < blocks.Count ? StartBlock(b + 1) : null;
                        if (request.Tokenizer is { } tokenizer)
                            result = StopStrings.Apply(result, request.StopStrings, tokenizer.Decode, request.Model.Config.PadTokenId);
                        var block = blocks[b];
                        int genLen = block.Settings.GenLen;
                        var lines = block.Prompts.Select((p, r) => new BatchResult(
                            p.Id, Enumerable.Range(0, genLen).Select(c => result.OutputIds[r, c]).ToArray(), result.Texts?[r] ?? "")).ToList();
                        output.Append(lines);
                        foreach (var (tier, bytes) in result.Statistics.PeakBytesByTier)
                            peaks[tier] = Math.Max(bytes, peaks.GetValueOrDefault(tier));
                        lastTimeline = result.Timeline ?? lastTimeline;
                        Interlocked.Add(ref tokens, (long)lines.Count * genLen);
                        Interlocked.Add(ref done, lines.Count);
                        progress.Report(done, $"block {b + 1}/{blocks.Count} done, {Rate():F1} token/s");
                    }
                }
                finally
                {
                    // A failed write leaves the queued block running until the runtime stops: observe its end.
                    _ = next?.ContinueWith(t => t.Exception, TaskScheduler.Default);
                }
                progress.Complete();
            }

            double seconds = generation.Elapsed.TotalSeconds;
            console.Output.WriteLine(
                $"batch: {todo.Count} prompts in {blocks.Count} blocks ({already} of {prompts.Count} were already done): {tokens} tokens in " +
                $"{seconds:F3} s, {Rate():F1} token/s ({clock.Elapsed.TotalSeconds:F2} s with start-up)");
            GenerationFlags.PrintPeaks(console.Output, new RunStatistics(todo.Count, 0, 0, TimeSpan.Zero, TimeSpan.Zero, peaks));
            console.Output.WriteLine($"output: {output.FullPath}");
            if (GenerationFlags.WriteTrace(lastTimeline, request.TracePath) is { } traceLine)
                console.Output.WriteLine(traceLine.Replace("trace: ", "trace (the last block): ", StringComparison.Ordinal));
            return ExitCodes.Success;
        }, cancellation);
    }

    private static Task<BatchGeneration> Start(IGenerationService service, BatchBlock block, ResolvedModel model,
        IProgress<GenerationProgress> progress, CancellationToken cancellation) =>
        service.GenerateBatchAsync(Matrix(block, model), block.Settings, cutGenLen: null, progress, cancellation);

    private sealed class TokenProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }

    private static long[,] Matrix(BatchBlock block, ResolvedModel model) =>
        PromptMatrix.LeftPad(block.Prompts.Select(p => (IReadOnlyList<long>)p.PromptIds).ToList(), model.Config.PadTokenId);
}
