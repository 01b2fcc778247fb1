namespace FlexGen.Actors.Actors.Coordination;

using System.Collections.Immutable;
using Akka.Actor;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;

/// <summary>
/// One request on its way through its blocks, one block at a time: the running block, the rows and phase timings of
/// the blocks done, the trace shared by all blocks, and the progress messages to <see cref="GenerateRequest.ProgressTo"/>.
/// </summary>
internal sealed class RequestExecution
{
    private readonly IReadOnlyList<BlockRequest> _blocks;
    private readonly ImmutableArray<ImmutableArray<long>>.Builder _outputs;
    private TimeSpan _prefill;
    private TimeSpan _decode;

    public RequestExecution(GenerateRequest request, IActorRef replyTo, IReadOnlyList<BlockRequest> blocks)
    {
        Request = request;
        ReplyTo = replyTo;
        _blocks = blocks;
        _outputs = ImmutableArray.CreateBuilder<ImmutableArray<long>>(blocks.Sum(b => b.ValidRows));
    }

    public GenerateRequest Request { get; }

    public IActorRef ReplyTo { get; }

    public TraceRecorder Trace { get; } = new();

    /// <summary>The block running now; null between blocks and once the last one is done.</summary>
    public BlockExecution? Block { get; private set; }

    public bool IsRunning(RunId run) => Block is { } block && block.Run.Id == run;

    /// <summary>Starts block <paramref name="index"/> (its run registered in <paramref name="runs"/>).</summary>
    public void StartBlock(int index, IPipelineBackend backend, RunRegistry runs, PipelineSettings options) =>
        Block = BlockExecution.Start(index, _blocks[index], new RunId(Request.RequestId, index), backend, runs, Trace, options);

    /// <summary>Records a completed part of the running block and reports the tokens it completed.</summary>
    public void Complete(TaskCompleted completed)
    {
        var block = Block!;
        int done = block.Complete(completed, Trace.Now);
        for (int token = block.TokensDone - done + 1; token <= block.TokensDone; token++)
        {
            Report(block, token, block.NewTokens(token - 1));
        }
    }

    /// <summary>
    /// Takes the finished block's rows and timings and frees its run. Returns the next block's index, or null when
    /// this was the last one.
    /// </summary>
    public int? FinishBlock(RunRegistry runs)
    {
        var block = Block!;
        var now = Trace.Now;
        _prefill += (block.PrefillEnded ?? now) - block.Started;
        _decode += now - (block.PrefillEnded ?? now);
        var ids = block.Run.OutputIds();
        if (block.CompleteRemainingTokens())
        {
            // The positions after the stop: pads, as the output holds them.
            int last = block.Tokens - 1;
            Report(block, block.Tokens, new GeneratedTokens(last, 0, [.. ids.Take(block.Run.Block.ValidRows).Select(row => row[last])]));
        }

        for (int row = 0; row < block.Run.Block.ValidRows; row++)
        {
            _outputs.Add(ids[row].ToImmutableArray());
        }

        Block = null;
        block.Free(runs);
        return block.Index + 1 < _blocks.Count ? block.Index + 1 : null;
    }

    /// <summary>Frees the running block's run, if any (every part of it has answered).</summary>
    public void FreeBlock(RunRegistry runs)
    {
        var block = Block;
        Block = null;
        block?.Free(runs);
    }

    public GenerationResult Result(IReadOnlyDictionary<string, long> peakBytes) =>
        new(Request.RequestId, _outputs.ToImmutable(), new PhaseTimings(_prefill, _decode), peakBytes.ToImmutableDictionary(), Trace.ToTrace());

    private void Report(BlockExecution block, int token, GeneratedTokens? newTokens) =>
        Request.ProgressTo?.Tell(new GenerationProgress(Request.RequestId, block.Index, _blocks.Count, token, block.Tokens, Trace.Now, newTokens));
}
