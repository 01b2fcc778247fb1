namespace FlexGen.Host.Generation;

using System.Threading.Channels;
using FlexGen.Actors.Messages;
using FlexGen.Host.Text;

/// <summary>
/// Queues requests and packs them, in arrival order, into blocks of the engine's size: a block takes every
/// waiting request with the same settings, up to the block size, waiting at most <see cref="BatchWindow"/> for
/// more after the first. Prompts are left-padded with the pad id to the block's longest (the engine pads a short
/// block). One block runs at a time; <see cref="GenerateBatchAsync"/> runs a whole matrix as one engine run.
/// </summary>
public sealed class GenerationService : IGenerationService, IAsyncDisposable
{
    private readonly IGenerationEngine _engine;
    private readonly BpeTokenizer? _tokenizer;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _worker;
    private int _disposed;

    public GenerationService(IGenerationEngine engine, BpeTokenizer? tokenizer = null, TimeSpan? batchWindow = null)
    {
        _engine = engine;
        _tokenizer = tokenizer;
        BatchWindow = batchWindow ?? TimeSpan.FromMilliseconds(5);
        _worker = Task.Run(RunWorkerAsync);
    }

    /// <summary>How long a block waits for more requests after its first one.</summary>
    public TimeSpan BatchWindow { get; }

    public bool HasTokenizer => _tokenizer is not null;

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
        settings ??= new GenerationSettings();
        Check(promptIds, settings, "prompt");
        return Enqueue(promptIds.ToArray(), settings, cancellation);
    }

    public IReadOnlyList<long>? Encode(string prompt) => _tokenizer?.Encode(prompt).Select(i => (long)i).ToArray();

    public async Task<BatchGeneration> GenerateBatchAsync(long[,] inputIds, GenerationSettings? settings = null, int? cutGenLen = null,
        IProgress<GenerationProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        settings ??= new GenerationSettings();
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

    private Task<GeneratedSequence> Enqueue(long[] ids, GenerationSettings settings, CancellationToken cancellation)
    {
        if (_stopping.IsCancellationRequested) throw new ObjectDisposedException(nameof(GenerationService), "The generation service is stopping.");
        var pending = new Pending(ids, settings, cancellation);
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
        var deferred = new List<Pending>();
        try
        {
            while (true)
            {
                if (deferred.Count == 0 && !await reader.WaitToReadAsync(_stopping.Token).ConfigureAwait(false)) break;
                var block = await CollectBlockAsync(reader, deferred).ConfigureAwait(false);
                if (block.Count > 0) await RunBlockAsync(block).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        finally
        {
            foreach (var p in deferred) p.Fail(new ObjectDisposedException(nameof(GenerationService), "The generation service stopped."));
            while (reader.TryRead(out var p)) p.Fail(new ObjectDisposedException(nameof(GenerationService), "The generation service stopped."));
        }
    }

    /// <summary>The next block: the oldest live request and every later one with equal settings, up to the block size.</summary>
    private async Task<List<Pending>> CollectBlockAsync(ChannelReader<Pending> reader, List<Pending> deferred)
    {
        int capacity = _engine.BlockSize;
        var block = new List<Pending>(capacity);
        var keep = new List<Pending>();
        foreach (var p in deferred)
        {
            if (p.IsCancelled) continue;
            if (block.Count < capacity && (block.Count == 0 || block[0].Settings == p.Settings)) block.Add(p);
            else keep.Add(p);
        }
        deferred.Clear();
        deferred.AddRange(keep);

        using var window = new CancellationTokenSource(BatchWindow);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(window.Token, _stopping.Token);
        while (block.Count < capacity)
        {
            if (reader.TryRead(out var p))
            {
                if (p.IsCancelled) continue;
                if (block.Count == 0 || block[0].Settings == p.Settings) block.Add(p);
                else deferred.Add(p);
                continue;
            }
            if (block.Count == 0 && deferred.Count > 0) break;
            try
            {
                if (!await reader.WaitToReadAsync(block.Count == 0 ? _stopping.Token : linked.Token).ConfigureAwait(false)) break;
            }
            catch (OperationCanceledException) when (window.IsCancellationRequested && !_stopping.IsCancellationRequested)
            {
                break;
            }
        }
        return block;
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
        try
        {
            var run = await _engine.RunAsync(input, settings, null, null, allCancelled.Token).ConfigureAwait(false);
            for (int r = 0; r < block.Count; r++)
            {
                var output = new long[settings.GenLen];
                for (int c = 0; c < output.Length; c++) output[c] = run.OutputIds[r, c];
                string? text = _tokenizer?.Decode(output);
                block[r].Complete(new GeneratedSequence(block[r].PromptIds, output, text, run.Statistics));
            }
        }
        catch (Exception ex)
        {
            foreach (var p in block) p.Fail(ex);
        }
        finally
        {
            foreach (var reg in registrations) reg.Dispose();
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
    }

    private sealed class Pending
    {
        private readonly TaskCompletionSource<GeneratedSequence> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenRegistration _registration;

        public Pending(long[] promptIds, GenerationSettings settings, CancellationToken cancellation)
        {
            PromptIds = promptIds;
            Settings = settings;
            Cancellation = cancellation;
            _registration = cancellation.Register(() => _completion.TrySetCanceled(cancellation));
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
