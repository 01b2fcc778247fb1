namespace FlexGen.Host.Generation;

using System.Threading.Channels;
using FlexGen.Actors.Messages;
using FlexGen.Tensors.Layers;
using FlexGen.Host.Text;

/// <summary>
/// Packs requests, in arrival order, into blocks of the engine's size and hands each block to the engine at once: the
/// requests that arrive within <see cref="BatchWindow"/> of the first are grouped by settings and cut into blocks of up
/// to the block size. Prompts are left-padded with the pad id to the block's longest (the engine pads a short block).
/// The service holds a request only for that window; blocks then wait their turn in the one request queue, the
/// generation coordinator's, which runs one at a time. <see cref="GenerateBatchAsync"/> runs a whole matrix as one
/// engine run.
/// </summary>
public sealed class GenerationService : IGenerationService, IAsyncDisposable
{
    private readonly IGenerationEngine _engine;
    private readonly BpeTokenizer? _tokenizer;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _worker;
    private readonly HashSet<Task> _running = new();
    private int _disposed;

    public GenerationService(IGenerationEngine engine, BpeTokenizer? tokenizer = null, TimeSpan? batchWindow = null)
    {
        _engine = engine;
        _tokenizer = tokenizer;
        BatchWindow = batchWindow ?? TimeSpan.FromMilliseconds(5);
        _worker = Task.Run(RunWorkerAsync);
    }

    /// <summary>What a request without settings gets: 32 tokens, greedy, no stop token.</summary>
    public static GenerationSettings DefaultSettings { get; } = new(32);

    /// <summary>How long a block waits for more requests after its first one.</summary>
    public TimeSpan BatchWindow { get; }

    public bool HasTokenizer => _tokenizer is not null;

    /// <summary>
    /// Raised after each block of <see cref="GenerateAsync(IReadOnlyList{long}, GenerationSettings?, CancellationToken)"/>
    /// requests has run (or failed), before its callers get their results: for metrics. Keep it quick.
    /// </summary>
    public event Action<BlockReport>? BlockCompleted;

    /// <summary>The text of token ids (the model's tokenizer); null without one.</summary>
    public string? Decode(IReadOnlyList<long> ids) => _tokenizer?.Decode(ids);

    public Task<GeneratedSequence> GenerateAsync(string prompt, GenerationSettings? settings = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (_tokenizer is null)
            throw new InvalidOperationException(
                $"Text prompts need {BpeTokenizer.VocabFileName} and {BpeTokenizer.MergesFileName} in the model folder of {_engine.Model.Name}.");
        return GenerateAsync(_tokenizer.Encode(prompt).Select(i => (long)i).ToArray(), settings, cancellation);
    }

    public Task<GeneratedSequence> GenerateAsync(IReadOnlyList<long> promptIds, GenerationSettings? settings = null,
        CancellationToken cancellation = default)
    {
        settings ??= DefaultSettings;
        Check(promptIds, settings, "prompt");
        return Enqueue(promptIds.ToArray(), settings, cancellation);
    }

    public Task<GeneratedSequence> GenerateAsync(IReadOnlyList<long> promptIds, GenerationSettings? settings, IProgress<GeneratedToken> tokens,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        settings ??= DefaultSettings;
        Check(promptIds, settings, "prompt");
        return Enqueue(promptIds.ToArray(), settings, cancellation, tokens);
    }

    public IReadOnlyList<long>? Encode(string prompt) => _tokenizer?.Encode(prompt).Select(i => (long)i).ToArray();

    public async Task<BatchGeneration> GenerateBatchAsync(long[,] inputIds, GenerationSettings? settings = null, int? cutGenLen = null,
        IProgress<GenerationProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        settings ??= DefaultSettings;
        int rows = inputIds.GetLength(0), cols = inputIds.GetLength(1);
        if (rows == 0 || cols == 0)
            throw new ArgumentException($"The prompt matrix is ({rows}, {cols}); it needs at least one row and one column.", nameof(inputIds));
        if (cutGenLen is { } cut && (cut < 1 || cut > settings.GenLen))
            throw new ArgumentOutOfRangeException(nameof(cutGenLen), cut, $"cut_gen_len must be in [1, gen_len = {settings.GenLen}].");
        var row = new long[cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++) row[c] = inputIds[r, c];
            Check(row, settings, $"prompt row {r}");
        }
        var run = await _engine.RunAsync(inputIds, settings, cutGenLen, progress, cancellation).ConfigureAwait(false);
        IReadOnlyList<string>? texts = null;
        if (_tokenizer is not null)
            texts = Enumerable.Range(0, rows)
                .Select(r => _tokenizer.Decode(Enumerable.Range(0, run.OutputIds.GetLength(1)).Select(c => run.OutputIds[r, c])))
                .ToArray();
        return new BatchGeneration(run.OutputIds, texts, run.Statistics, run.Timeline);
    }

    private Task<GeneratedSequence> Enqueue(long[] ids, GenerationSettings settings, CancellationToken cancellation, IProgress<GeneratedToken>? tokens = null)
    {
        if (_stopping.IsCancellationRequested) throw new ObjectDisposedException(nameof(GenerationService), "The generation service is stopping.");
        var pending = new Pending(ids, settings, cancellation, tokens);
        if (!_queue.Writer.TryWrite(pending)) throw new ObjectDisposedException(nameof(GenerationService), "The generation service is stopping.");
        return pending.Task;
    }

    private void Check(IReadOnlyList<long> ids, GenerationSettings settings, string what)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var model = _engine.Model;
        if (ids.Count == 0) throw new ArgumentException($"The {what} has no tokens.", nameof(ids));
        for (int i = 0; i < ids.Count; i++)
            if (ids[i] < 0 || ids[i] >= model.VocabSize)
                throw new ArgumentException($"The {what} has token id {ids[i]} at position {i}, outside [0, {model.VocabSize}) of {model.Name}.", nameof(ids));
        if (!model.Fits(ids.Count, settings.GenLen))
            throw new ArgumentException(
                $"The {what} has {ids.Count} tokens; with gen_len {settings.GenLen} that reads {ids.Count + settings.GenLen - 1} positions, more than {model.Name}'s max_seq_len {model.MaxSeqLen}.", nameof(ids));
    }

    private async Task RunWorkerAsync()
    {
        var reader = _queue.Reader;
        try
        {
            while (await reader.WaitToReadAsync(_stopping.Token).ConfigureAwait(false))
            {
                foreach (var block in await CollectBlocksAsync(reader).ConfigureAwait(false))
                {
                    // Handed over without waiting: the coordinator queues the blocks; the next window packs new arrivals.
                    var running = RunBlockAsync(block);
                    lock (_running) _running.Add(running);
                    _ = running.ContinueWith(t => { lock (_running) _running.Remove(t); }, TaskScheduler.Default);
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        finally
        {
            while (reader.TryRead(out var p)) p.Fail(new ObjectDisposedException(nameof(GenerationService), "The generation service stopped."));
        }
    }

    /// <summary>
    /// The live requests that arrive within <see cref="BatchWindow"/> of the first (or until a block is full), grouped
    /// by settings in order of each group's first request, cut into blocks of up to the block size.
    /// </summary>
    private async Task<List<List<Pending>>> CollectBlocksAsync(ChannelReader<Pending> reader)
    {
        int capacity = _engine.BlockSize;
        var groups = new List<List<Pending>>();
        using var window = new CancellationTokenSource(BatchWindow);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(window.Token, _stopping.Token);
        while (true)
        {
            while (reader.TryRead(out var p))
            {
                if (p.IsCancelled) continue;
                var group = groups.FirstOrDefault(g => g[0].Settings == p.Settings);
                if (group is null) groups.Add(group = new List<Pending>());
                group.Add(p);
            }
            if (groups.Count == 1 && groups[0].Count >= capacity) break;
            try
            {
                if (!await reader.WaitToReadAsync(linked.Token).ConfigureAwait(false)) break;
            }
            catch (OperationCanceledException) when (window.IsCancellationRequested && !_stopping.IsCancellationRequested)
            {
                break;
            }
        }
        return groups.SelectMany(g => g.Chunk(capacity).Select(c => c.ToList())).ToList();
    }

    private async Task RunBlockAsync(List<Pending> block)
    {
        var settings = block[0].Settings;
        var input = PromptMatrix.LeftPad(block.Select(p => p.PromptIds).ToList(), _engine.Model.PadTokenId);

        // The run is cancelled when every member has been cancelled, or the service stops.
        using var allCancelled = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        int live = block.Count;
        var registrations = block.Select(p => p.Cancellation.Register(() =>
        {
            if (Interlocked.Decrement(ref live) == 0) allCancelled.Cancel();
        })).ToList();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            // The block is one engine block (at most its size): each report's new tokens are those of its rows, in order.
            var streaming = block.Any(p => p.Streams) ? new BlockStream(block) : null;
            var run = await _engine.RunAsync(input, settings, null, streaming, allCancelled.Token).ConfigureAwait(false);
            Report(new BlockReport(block.Count, settings, clock.Elapsed, run.Statistics, run.Timeline, null));
            for (int r = 0; r < block.Count; r++)
            {
                var output = new long[settings.GenLen];
                for (int c = 0; c < output.Length; c++) output[c] = run.OutputIds[r, c];
                block[r].Flush(output);
                string? text = _tokenizer?.Decode(output);
                block[r].Complete(new GeneratedSequence(block[r].PromptIds, output, text, run.Statistics));
            }
        }
        catch (Exception ex)
        {
            Report(new BlockReport(block.Count, settings, clock.Elapsed, null, null, ex));
            foreach (var p in block) p.Fail(ex);
        }
        finally
        {
            foreach (var reg in registrations) reg.Dispose();
        }
    }

    private void Report(BlockReport report)
    {
        try
        {
            BlockCompleted?.Invoke(report);
        }
        catch (Exception)
        {
            // An observer's failure is not the block's.
        }
    }

    /// <summary>Stops taking requests; queued ones fail with <see cref="ObjectDisposedException"/>. Idempotent.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _queue.Writer.TryComplete();
        _stopping.Cancel();
        try { await _worker.ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        Task[] running;
        lock (_running) running = _running.ToArray();
        await Task.WhenAll(running).ConfigureAwait(false); // each ends cancelled (_stopping), its callers failed
    }

    /// <summary>Hands each reported token of a block's rows to its request's stream.</summary>
    private sealed class BlockStream(List<Pending> block) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value)
        {
            if (value.NewTokens is not { } tokens || value.Block != 0) return;
            for (int r = 0; r < block.Count && r < tokens.Ids.Length; r++) block[r].Deliver(tokens.Token, tokens.Ids[r]);
        }
    }

    private sealed class Pending
    {
        private readonly TaskCompletionSource<GeneratedSequence> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenRegistration _registration;
        private readonly IProgress<GeneratedToken>? _tokens;
        private readonly Lock _delivering = new();
        private int _delivered;

        public Pending(long[] promptIds, GenerationSettings settings, CancellationToken cancellation, IProgress<GeneratedToken>? tokens = null)
        {
            PromptIds = promptIds;
            Settings = settings;
            Cancellation = cancellation;
            _tokens = tokens;
            _registration = cancellation.Register(() => _completion.TrySetCanceled(cancellation));
        }

        public bool Streams => _tokens is not null;

        /// <summary>Streams token <paramref name="index"/> when it is the next one (a report that skipped some waits for <see cref="Flush"/>).</summary>
        public void Deliver(int index, long id)
        {
            if (_tokens is null) return;
            lock (_delivering)
            {
                if (index != _delivered || IsCancelled || _completion.Task.IsCompleted) return;
                _delivered++;
                Tell(index, id);
            }
        }

        /// <summary>Streams the tokens of <paramref name="output"/> not streamed yet, before the result is set.</summary>
        public void Flush(long[] output)
        {
            if (_tokens is null) return;
            lock (_delivering)
            {
                for (; _delivered < output.Length && !IsCancelled; _delivered++) Tell(_delivered, output[_delivered]);
            }
        }

        private void Tell(int index, long id)
        {
            try
            {
                _tokens!.Report(new GeneratedToken(index, id));
            }
            catch (Exception)
            {
                // The caller's observer failing is not the block's failure (its result still comes).
            }
        }

        public long[] PromptIds { get; }

        public GenerationSettings Settings { get; }

        public CancellationToken Cancellation { get; }

        public bool IsCancelled => Cancellation.IsCancellationRequested;

        public Task<GeneratedSequence> Task => _completion.Task;

        public void Complete(GeneratedSequence result)
        {
            _registration.Dispose();
            _completion.TrySetResult(result);
        }

        public void Fail(Exception ex)
        {
            _registration.Dispose();
            if (ex is OperationCanceledException && Cancellation.IsCancellationRequested) _completion.TrySetCanceled(Cancellation);
            else _completion.TrySetException(ex);
        }
    }
}

/// <summary>One block the service ran for its queued requests.</summary>
/// <param name="Sequences">Requests in the block (padding rows not counted).</param>
/// <param name="Elapsed">From handing the block to the engine to its end (includes its wait in the coordinator's queue).</param>
/// <param name="Statistics">The engine run's statistics; null when the block failed.</param>
/// <param name="Failure">Why the block failed; null when it ran.</param>
public sealed record BlockReport(int Sequences, GenerationSettings Settings, TimeSpan Elapsed, RunStatistics? Statistics, IRunTimeline? Timeline,
    Exception? Failure);
