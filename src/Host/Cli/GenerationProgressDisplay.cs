namespace FlexGen.Host.Cli;

using FlexGen.Actors.Messages;

/// <summary>
/// Shows a run's <see cref="GenerationProgress"/> on a <see cref="ProgressReporter"/>: one unit per token of a block,
/// a bar on a terminal and plain lines when output is redirected.
/// </summary>
public sealed class GenerationProgressDisplay : IProgress<GenerationProgress>, IDisposable
{
    private readonly ProgressReporter _reporter;

    /// <param name="rows">Prompts in the run.</param>
    /// <param name="blockSize">gpu_batch_size x num_gpu_batches.</param>
    /// <param name="tokens">Tokens each block runs (cut_gen_len or gen_len).</param>
    public GenerationProgressDisplay(CliConsole console, string stage, int rows, int blockSize, int tokens)
    {
        int blocks = (rows + blockSize - 1) / blockSize;
        _reporter = console.Progress(stage, (long)blocks * tokens, blocks == 1 ? "tokens" : $"tokens of {blocks} blocks");
    }

    public void Report(GenerationProgress value) => _reporter.Report(value.Done);

    public void Complete() => _reporter.Complete();

    public void Dispose() => _reporter.Dispose();
}
