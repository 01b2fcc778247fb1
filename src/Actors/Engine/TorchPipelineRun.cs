namespace FlexGen.Actors.Engine;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Engine.Handlers;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using static TorchSharp.torch;

/// <summary>
/// One block of a request on the real backend: hands each task part to the handler of its kind, releases what a part
/// used last through the block's <see cref="BlockBuffers"/>, and owns the block's KV cache homes (on their tiers, files
/// included), its buffers and its output. The coordinator runs a part only after the parts it reads from completed.
/// </summary>
internal sealed class TorchPipelineRun : IStageRun
{
    private readonly BlockBuffers _buffers;
    private readonly WeightBufferPool _weightBuffers;
    private readonly BlockCacheHomes _cache;
    private readonly TokenOutput _tokens;
    private readonly StageLink _stage = new();
    private readonly bool _firstStage;
    private readonly Generator? _generator;
    private readonly LoadWeightHandler _loadWeight;
    private readonly LoadCacheHandler _loadCache;
    private readonly LoadHiddenHandler _loadHidden;
    private readonly ComputeLayerHandler _compute;
    private readonly StoreCacheHandler _storeCache;
    private readonly StoreHiddenHandler _storeHidden;
    private volatile bool _cancelled;
    private bool _disposed;

    public TorchPipelineRun(TorchPipelineBackend backend, RunId id, BlockRequest block, TorchBlockPlan plan, TraceRecorder trace, IBufferObserver? observer)
    {
        Id = id;
        Block = block;
        Trace = trace;
        _buffers = new BlockBuffers(id, plan, observer);
        _weightBuffers = new WeightBufferPool(backend.Tiers.Gpu);
        _tokens = new TokenOutput(block, backend.PadTokenId, backend.Policy.GpuBatchSize);
        if (!block.Generation.Sampling.IsGreedy)
        {
            _generator = new Generator((block.Generation.Sampling.Seed ?? (ulong)Random.Shared.NextInt64()) + (ulong)block.BlockIndex, backend.Tiers.Gpu.Device);
        }

        try
        {
            _cache = BlockCacheHomes.Allocate(plan.Placement, backend.Tiers);
        }
        catch
        {
            _generator?.Dispose();
            throw;
        }

        _firstStage = plan.Schedule.Shape.FirstStage;
        var run = new BlockRunContext(backend, block, plan, _cache, _buffers, _tokens, _stage, _generator, _weightBuffers);
        _loadWeight = new LoadWeightHandler(run);
        _loadCache = new LoadCacheHandler(run);
        _loadHidden = new LoadHiddenHandler(run);
        _compute = new ComputeLayerHandler(run);
        _storeCache = new StoreCacheHandler(run);
        _storeHidden = new StoreHiddenHandler(run);
    }

    public RunId Id { get; }

    public BlockRequest Block { get; }

    public TraceRecorder Trace { get; }

    public bool IsCancelled => _cancelled;

    public void Cancel() => _cancelled = true;

    public long[][] OutputIds() => _tokens.Snapshot();

    public PartResult Execute(BlockTask task, PipelineActorKind actor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ITaskHandler handler = task.Kind switch
        {
            TaskKind.LoadWeight => _loadWeight,
            TaskKind.LoadCache => _loadCache,
            TaskKind.LoadHidden => _loadHidden,
            TaskKind.ComputeLayer => _compute,
            TaskKind.StoreCache => _storeCache,
            TaskKind.StoreHidden => _storeHidden,
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, null),
        };

        // Torch temporaries of the part die with this scope; what outlives it went to the buffers (tier tensors).
        using var scope = NewDisposeScope();
        long bytes = handler.Execute(new TaskPart(task, actor));
        var written = task.Kind == TaskKind.StoreHidden ? _storeHidden.Written(task) : null;
        return new PartResult(bytes, _tokens.StoppedAfterToken, written);
    }

    /// <summary>The first stage's input of token i is the ids the last stage sampled at i - 1: they join the output here.</summary>
    public void Deliver(StageTensor input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_firstStage)
        {
            _tokens.Write(input.Token - 1, input.Batch, input.Payload.ToIds());
            return;
        }

        _stage.Deliver(input);
    }

    public StageTensor TakeOutput(int token, int batch) => _stage.TakeOutput(token, batch);

    public void Release(BlockTask task, PipelineActorKind actor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _buffers.Release(new TaskPart(task, actor));
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _cancelled = true;
        _buffers.Dispose(); // returns the weight buffers it still held to the pool, which frees them next
        _weightBuffers.Dispose();
        _cache.Dispose();
        _generator?.Dispose();
    }
}
