namespace FlexGen.Actors.Engine;

using System.Collections.Concurrent;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;
using PipelineActorKind = FlexGen.Actors.Schedule.PipelineActorKind;

/// <summary>
/// One block of a request on the real backend. Owns the block's KV cache homes (on their tiers, files included)
/// and every buffer between tasks; the coordinator's ordering guarantees that a buffer is written by one task
/// part before any part that reads it starts, so the slots need no locks (only concurrent dictionaries, because
/// parts of different tasks run on different threads at once).
/// <para>
/// Buffers and who frees them: loaded weights (i, j) - freed by the last GPU batch's compute (k = K-1) of (i, j);
/// loaded cache (i, j, k) and input hidden (i, j, k) - freed by compute (i, j, k); new cache entries - freed by
/// store-cache; compute output - moved to the activation home (or the output ids) by store-hidden, freed by the
/// next load-hidden; weights homed on the GPU tier are read in place (the backend owns them). Everything still
/// held when the run is disposed (cancellation, failure) is freed then.
/// </para>
/// </summary>
internal sealed class TorchPipelineRun : IPipelineRun
{
    private readonly TorchPipelineBackend _backend;
    private readonly ModelConfig _config;
    private readonly Policy _policy;
    private readonly IReadOnlyList<LayerSpec> _layers;
    private readonly PlacementPlan _plan;
    private readonly TaskRouter _router;
    private readonly int _kvHeads;
    private readonly int _batchRows;
    private readonly long[][] _outputIds;
    private readonly bool[] _stopped;
    private int _validRowsRunning;
    private volatile int _stoppedAfterToken = -1;
    private readonly Generator? _generator;
    private readonly Dictionary<(int J, int K), CacheHome> _cache = new();
    private KvCache? _kvCache;
    private readonly ConcurrentDictionary<(int I, int J), TieredTensor?[]> _weights = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), ConcurrentDictionary<int, (TieredTensor Key, TieredTensor? Value)>> _cacheLoaded = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), (DeviceTensor Key, DeviceTensor Value)> _cacheNew = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), TieredTensor> _hiddenIn = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), TieredTensor> _hiddenOut = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), TieredTensor> _parked = new();
    private readonly ConcurrentDictionary<(int I, int J, int K), Lazy<SplitOutput>> _splitOutputs = new();
    private readonly ConcurrentDictionary<BlockTask, int> _partsLeft = new();
    private volatile bool _cancelled;
    private bool _disposed;

    public TorchPipelineRun(TorchPipelineBackend backend, RunId id, BlockRequest block, TorchBlockPlan plan, TraceRecorder trace)
    {
        _backend = backend;
        _config = backend.Config;
        _policy = backend.Policy;
        _layers = backend.Layers;
        Id = id;
        Block = block;
        Trace = trace;
        _kvHeads = _config.KvHeads;
        _batchRows = _policy.GpuBatchSize;
        _plan = plan.Placement;
        _router = plan.Router;

        _outputIds = Enumerable.Range(0, block.Rows).Select(_ => Enumerable.Repeat((long)_config.PadTokenId, block.GenLen).ToArray()).ToArray();
        _stopped = new bool[block.Rows];
        _validRowsRunning = block.ValidRows;
        if (!block.Sampling.IsGreedy)
        {
            _generator = new Generator((block.Sampling.Seed ?? (ulong)Random.Shared.NextInt64()) + (ulong)block.BlockIndex, backend.Tiers.Gpu.Device);
        }

        try
        {
            AllocateCache();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public RunId Id { get; }

    public BlockRequest Block { get; }

    public TraceRecorder Trace { get; }

    public bool IsCancelled => _cancelled;

    private bool CpuAttention => _router.Plan.CpuAttention;

    private ComputeSettings GpuCompute => _backend.Settings.Compute;

    private ComputeSettings CpuComputeSettings => _backend.Settings.CpuCompute;

    private DeviceTier Gpu => _backend.Tiers.Gpu;

    public void Cancel() => _cancelled = true;


    public long[][] OutputIds() => _outputIds.Select(r => (long[])r.Clone()).ToArray();

    public PartResult Execute(BlockTask task, PipelineActorKind tier)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        long bytes = task.Kind switch
        {
            TaskKind.LoadWeight => LoadWeight(task, tier),
            TaskKind.LoadCache => LoadCache(task, tier),
            TaskKind.LoadHidden => LoadHidden(task),
            TaskKind.ComputeLayer => Compute(task, tier),
            TaskKind.StoreCache => StoreCache(task, tier),
            TaskKind.StoreHidden => StoreHidden(task),
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, null),
        };

        return new PartResult(bytes, _stoppedAfterToken < 0 ? null : _stoppedAfterToken);
    }

    public void Release(BlockTask task, PipelineActorKind tier)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (LastPart(task))
        {
            FinishTask(task);
        }
    }

    // ---- weights ----------------------------------------------------------------------------------------------

    private long LoadWeight(BlockTask task, PipelineActorKind tier)
    {
        var homes = _backend.WeightHomes(task.Layer);
        var slot = _weights.GetOrAdd((task.Token, task.Layer), _ => new TieredTensor?[homes.Count]);
        long bytes = 0;
        for (int w = 0; w < homes.Count; w++)
        {
            if (TaskRouter.WeightLoader(HomeOf(homes[w])) == tier)
            {
                // Compressed weights travel compressed and are decompressed by the compute that uses them.
                MemoryTier destination = homes[w] is CompressedTensor ? _backend.GpuCompressedWeights! : Gpu;
                slot[w] = TierCopy.CopyTo(homes[w], destination, name: $"{homes[w].Name}@i{task.Token}");
                bytes += StoredBytes(homes[w]);
            }
        }

        return bytes;
    }

    private static long StoredBytes(TieredTensor tensor) => tensor is CompressedTensor c ? c.StoredBytes : tensor.Bytes;

    /// <summary>
    /// The weights of layer j for token i as torch tensors on <paramref name="device"/>: GPU-homed ones in place, others
    /// as loaded; compressed ones decompressed here (the copies go to <paramref name="temporaries"/>).
    /// </summary>
    private Tensor[] WeightsOf(int i, int j, Device device, List<Tensor> temporaries, out long bytes)
    {
        var homes = _backend.WeightHomes(j);
        _weights.TryGetValue((i, j), out var loaded);
        var result = new Tensor[homes.Count];
        bytes = 0;
        for (int w = 0; w < homes.Count; w++)
        {
            var source = loaded?[w] ?? homes[w];
            result[w] = Plain(source, null, device, temporaries)
                ?? throw new InvalidOperationException($"weight {homes[w].Name} of layer {j} was not loaded for token {i}");
            bytes += StoredBytes(homes[w]);
        }

        return result;
    }

    /// <summary>A plain tensor of <paramref name="source"/>[ranges]: in place for device tensors, decompressed for compressed ones, null for disk.</summary>
    private static Tensor? Plain(TieredTensor source, IndexRange[]? ranges, Device device, List<Tensor> temporaries)
    {
        switch (source)
        {
            case DeviceTensor plain:
                return ranges is null ? plain.Data : plain.Data.narrow(0, ranges[0].Start, ranges[0].Length);
            case CompressedTensor { Tier.Base: DeviceTier } compressed:
                var decompressed = TierCopy.ToTorch(compressed, ranges, device);
                temporaries.Add(decompressed);
                return decompressed;
            default:
                return null;
        }
    }

    // ---- cache ------------------------------------------------------------------------------------------------

    private void AllocateCache()
    {
        _kvCache = KvCache.Allocate(_plan, _backend.Tiers);
        for (int j = 0; j < _layers.Count; j++)
        {
            for (int k = 0; _layers[j].HasKvCache && k < _policy.NumGpuBatches; k++)
            {
                var (key, value) = _kvCache.Home(j, k);
                _cache[(j, k)] = new CacheHome(key, value);
            }
        }
    }

    /// <summary>The physical tier a (possibly compressed) tensor's bytes live on.</summary>
    private static TierKind HomeOf(TieredTensor tensor) =>
        tensor.Home ?? throw new InvalidOperationException($"tensor {tensor.Name} is on {tensor.Tier.Name}, not on one physical tier");

    private long LoadCache(BlockTask task, PipelineActorKind tier)
    {
        var home = _cache[(task.Layer, task.Batch)];
        long past = Block.PromptLen + task.Token - 1;
        var loaded = _cacheLoaded.GetOrAdd((task.Token, task.Layer, task.Batch), _ => new());
        long bytes = 0;
        for (int s = 0; s < home.Segments.Count; s++)
        {
            var segment = home.Segments[s];
            if (_router.CacheLoader(segment.Home) != tier)
            {
                continue;
            }

            bool toCpu = _router.CacheAttender(segment.Home) == PipelineActorKind.CpuCompute;
            MemoryTier destination = segment.Key is CompressedTensor
                ? (toCpu ? _backend.CpuCompressedCache! : _backend.GpuCompressedCache!) // decompressed by the compute
                : (toCpu ? _backend.Tiers.Cpu : Gpu);
            IndexRange[] ranges = [new(0, past), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            var key = TierCopy.CopyTo(segment.Key, destination, ranges);
            try
            {
                // Sparse attention fetches only the value rows it picks, when it computes (FlexGen's _sparse_attention_value).
                var value = FetchesValueRows(segment) ? null : TierCopy.CopyTo(segment.Value, destination, ranges);
                loaded[s] = (key, value);
                bytes += StoredBytes(key) + (value is null ? 0 : StoredBytes(value));
            }
            catch
            {
                key.Dispose();
                throw;
            }
        }

        return bytes;
    }

    /// <summary>
    /// True when decode attention over <paramref name="segment"/> reads only the value rows at its top-k positions
    /// (attn_sparsity &lt; 1). A compressed value cache is loaded whole instead: its rows sit in quantization groups
    /// that a row gather would have to decompress one by one.
    /// </summary>
    private bool FetchesValueRows(CacheSegmentHome segment) => _policy.AttnSparsity < 1 && segment.Value is not CompressedTensor;

    private long StoreCache(BlockTask task, PipelineActorKind tier)
    {
        var home = _cache[(task.Layer, task.Batch)];
        var (newKey, newValue) = _cacheNew[(task.Token, task.Layer, task.Batch)];
        var dtype = home.Key.Dtype;
        long start = task.Token == 0 ? 0 : Block.PromptLen + task.Token - 1;
        long length = newKey.Shape[0];
        long bytes = 0;
        foreach (var segment in home.Segments)
        {
            if (TaskRouter.CacheStorer(segment.Home) != tier)
            {
                continue;
            }

            IndexRange[] ranges = [new(start, start + length), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            var key = newKey.Data.narrow(1, segment.Start, segment.Length).to(dtype).contiguous(); // (s, rows, d)
            var value = newValue.Data.narrow(1, segment.Start, segment.Length).to(dtype).contiguous();
            TierCopy.CopyFrom(segment.Key, ranges, key);
            TierCopy.CopyFrom(segment.Value, ranges, value);
            bytes += 2 * key.NumberOfElements * key.ElementSize;
        }

        return bytes;
    }

    // ---- hidden states ----------------------------------------------------------------------------------------

    private long LoadHidden(BlockTask task)
    {
        var (i, j, k) = (task.Token, task.Layer, task.Batch);
        if (j == 0)
        {
            var rows = Enumerable.Range(k * _batchRows, _batchRows);
            var ids = i == 0
                ? rows.Select(r => Block.PromptIds[r].ToArray()).ToArray()
                : rows.Select(r => new[] { _outputIds[r][i - 1] }).ToArray();
            using var tensor = torch.tensor(ids.SelectMany(r => r).ToArray(), [_batchRows, ids[0].Length], ScalarType.Int64);
            var onGpu = Gpu.CopyOf(tensor, $"ids.i{i}.k{k}");
            _hiddenIn[(i, j, k)] = onGpu;
            return onGpu.Bytes;
        }

        if (!_parked.TryRemove((i, j - 1, k), out var parked))
        {
            throw new InvalidOperationException($"hidden state of ({i},{j - 1},{k}) was not stored before LoadHidden({i},{j},{k})");
        }

        if (parked.Home == TierKind.Gpu)
        {
            _hiddenIn[(i, j, k)] = parked;
            return 0;
        }

        try
        {
            _hiddenIn[(i, j, k)] = TierCopy.CopyTo(parked, Gpu);
            return parked.Bytes;
        }
        finally
        {
            parked.Dispose();
        }
    }

    private long StoreHidden(BlockTask task)
    {
        var (i, j, k) = (task.Token, task.Layer, task.Batch);
        if (!_hiddenOut.TryRemove((i, j, k), out var output))
        {
            throw new InvalidOperationException($"compute ({i},{j},{k}) left no output for StoreHidden");
        }

        if (j == _layers.Count - 1)
        {
            using (output)
            {
                var ids = ((DeviceTensor)output).Data.to(CPU).data<long>().ToArray(); // (b, 1)
                for (int r = 0; r < _batchRows; r++)
                {
                    int row = k * _batchRows + r;
                    long id = _stopped[row] ? _config.PadTokenId : ids[r];
                    if (Block.StopTokenId is { } stop && id == stop && !_stopped[row])
                    {
                        _stopped[row] = true;
                        if (row < Block.ValidRows && Interlocked.Decrement(ref _validRowsRunning) == 0)
                        {
                            _stoppedAfterToken = i; // the padding rows' output is dropped: they need not stop
                        }
                    }

                    _outputIds[row][i] = id;
                }

                return output.Bytes;
            }
        }

        var home = _plan.Activations.Home;
        if (home == TierKind.Gpu)
        {
            _parked[(i, j, k)] = output;
            return 0;
        }

        try
        {
            _parked[(i, j, k)] = TierCopy.CopyTo(output, _backend.TierOf(home));
            return output.Bytes;
        }
        finally
        {
            output.Dispose();
        }
    }

    // ---- compute ----------------------------------------------------------------------------------------------

    /// <summary>(batch, prompt_len + i) bool: the prompt mask of batch k, then i generated (real) positions.</summary>
    private Tensor Mask(int i, int k, Device device)
    {
        var rows = Enumerable.Range(k * _batchRows, _batchRows).Select(r => Block.AttentionMask[r]).ToArray();
        long width = Block.PromptLen + i;
        var flat = new bool[_batchRows * width];
        for (int r = 0; r < _batchRows; r++)
        {
            rows[r].CopyTo(0, flat, (int)(r * width), Block.PromptLen);
            Array.Fill(flat, true, (int)(r * width + Block.PromptLen), i);
        }

        return torch.tensor(flat, [_batchRows, width], device: device);
    }

    private long Compute(BlockTask task, PipelineActorKind tier)
    {
        var temporaries = new List<Tensor>();
        try
        {
            return ComputeLayer(task, tier, _layers[task.Layer].Kind, temporaries);
        }
        finally
        {
            foreach (var t in temporaries)
            {
                t.Dispose();
            }
        }
    }

    private long ComputeLayer(BlockTask task, PipelineActorKind tier, LayerKind kind, List<Tensor> temporaries)
    {
        var (i, j, k) = (task.Token, task.Layer, task.Batch);
        var weightDevice = tier == PipelineActorKind.CpuCompute ? CPU : Gpu.Device;
        var weights = WeightsOf(i, j, weightDevice, temporaries, out long bytes);
        if (kind.HasKvCache() && i > 0 && CpuAttention)
        {
            return bytes + ComputeDecodeRows(task, tier, weights, temporaries);
        }

        var hidden = ((DeviceTensor)_hiddenIn[(i, j, k)]).Data;
        var device = Gpu.Device;
        var compute = GpuCompute;
        Tensor output;
        switch (kind)
        {
            case LayerKind.InputEmbedding:
                output = _backend.LayerCompute.Embed(hidden, Mask(i, k, device), weights, compute);
                break;
            case LayerKind.Mlp:
                output = _backend.LayerCompute.Mlp(hidden, weights, compute);
                break;
            case LayerKind.OutputEmbedding:
                output = _backend.LayerCompute.Output(hidden, weights, compute, Block.Sampling, _generator);
                break;
            case LayerKind.Attention or LayerKind.Block:
            {
                var attention = AttentionWeights(j, weights);
                var mask = Mask(i, k, device);
                AttentionOutput result;
                if (i == 0)
                {
                    result = _backend.LayerCompute.Prefill(hidden, mask, attention, compute);
                }
                else
                {
                    var fetched = new ValueRowBytes();
                    var segments = CacheSegments(task, PipelineActorKind.GpuCompute, compute, temporaries, fetched, out long cacheBytes);
                    result = _backend.LayerCompute.Decode(hidden, mask, attention, segments, compute, _policy.AttnSparsity);
                    bytes += cacheBytes + fetched.Bytes;
                }

                output = result.Hidden;
                if (kind == LayerKind.Block)
                {
                    output = _backend.LayerCompute.Mlp(output, _layers[j].Group(weights, LayerSpec.MlpGroup), compute);
                }

                var newEntries = AllOrNone(() => Gpu.Adopt(result.NewKey), () => Gpu.Adopt(result.NewValue));
                _cacheNew[(i, j, k)] = (newEntries[0], newEntries[1]);
                break;
            }

            default:
                throw new InvalidOperationException($"unknown layer kind {kind}");
        }

        _hiddenOut[(i, j, k)] = Gpu.Adopt(output, $"hidden.i{i}.j{j}.k{k}");
        return bytes;
    }

    /// <summary>
    /// Decode attention (and the MLP of a joint layer) for the rows of batch k whose cache this compute actor
    /// attends over (cpu_cache_compute): GPU-cached rows on gpu-compute, CPU/disk-cached rows on cpu-compute.
    /// Rows are independent, so each part computes its rows completely and writes them into the shared outputs.
    /// </summary>
    private long ComputeDecodeRows(BlockTask task, PipelineActorKind tier, Tensor[] weights, List<Tensor> temporaries)
    {
        var (i, j, k) = (task.Token, task.Layer, task.Batch);
        var home = _cache[(j, k)];
        var mine = home.Segments.Where(s => _router.CacheAttender(s.Home) == tier).ToArray();
        if (mine.Length == 0)
        {
            return 0;
        }

        long rowStart = mine[0].Start, rowEnd = mine[^1].Start + mine[^1].Length; // in batch * kv_heads rows
        int firstRow = (int)(rowStart / _kvHeads), rowCount = (int)((rowEnd - rowStart) / _kvHeads);
        bool onCpu = tier == PipelineActorKind.CpuCompute;
        var device = onCpu ? CPU : Gpu.Device;
        var compute = onCpu ? CpuComputeSettings : GpuCompute;

        var hidden = ((DeviceTensor)_hiddenIn[(i, j, k)]).Data.narrow(0, firstRow, rowCount).to(device); // (rows, 1, h)
        var mask = Mask(i, k, device).narrow(0, firstRow, rowCount);
        var attention = AttentionWeights(j, weights);
        var fetched = new ValueRowBytes();
        var segments = CacheSegments(task, tier, compute, temporaries, fetched, out long bytes);
        var result = _backend.LayerCompute.Decode(hidden, mask, attention, segments, compute, _policy.AttnSparsity);
        bytes += fetched.Bytes;
        var output = result.Hidden;
        if (_layers[j].Kind == LayerKind.Block)
        {
            output = _backend.LayerCompute.Mlp(output, _layers[j].Group(weights, LayerSpec.MlpGroup), compute);
        }

        var shared = _splitOutputs.GetOrAdd((i, j, k), _ => new Lazy<SplitOutput>(() =>
        {
            var made = AllOrNone(
                () => Gpu.Allocate([_batchRows, 1, _config.HiddenSize], GpuCompute.Dtype, $"hidden.i{i}.j{j}.k{k}"),
                () => Gpu.Allocate([1, (long)_batchRows * _kvHeads, _config.HeadDim], GpuCompute.Dtype, $"newkey.i{i}.j{j}.k{k}"),
                () => Gpu.Allocate([1, (long)_batchRows * _kvHeads, _config.HeadDim], GpuCompute.Dtype, $"newvalue.i{i}.j{j}.k{k}"));
            return new SplitOutput(made[0], made[1], made[2]);
        })).Value;
        shared.Hidden.Data.narrow(0, firstRow, rowCount).copy_(output);
        shared.Key.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewKey);
        shared.Value.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewValue);
        return bytes;
    }

    /// <summary>The attention weights of layer j: all of an Attention layer, group 0 of a joint Block.</summary>
    private IReadOnlyList<Tensor> AttentionWeights(int j, Tensor[] weights) =>
        _layers[j].Kind == LayerKind.Block ? _layers[j].Group(weights, LayerSpec.AttentionGroup) : weights;

    /// <summary>
    /// The cache segments a compute actor attends over at (i, j, k): loaded copies, or homes read in place. With sparse
    /// attention the value rows are fetched from the value home by position while attending (counted in
    /// <paramref name="fetched"/>); <paramref name="bytes"/> counts the rest of what is read.
    /// </summary>
    private List<CacheSegment> CacheSegments(BlockTask task, PipelineActorKind tier, ComputeSettings compute, List<Tensor> temporaries, ValueRowBytes fetched, out long bytes)
    {
        var home = _cache[(task.Layer, task.Batch)];
        _cacheLoaded.TryGetValue((task.Token, task.Layer, task.Batch), out var loaded);
        var segments = new List<CacheSegment>();
        bytes = 0;
        for (int s = 0; s < home.Segments.Count; s++)
        {
            var segment = home.Segments[s];
            if (CpuAttention && _router.CacheAttender(segment.Home) != tier)
            {
                continue;
            }

            long past = Block.PromptLen + task.Token - 1;
            (TieredTensor Key, TieredTensor? Value) copy = default;
            bool isLoaded = loaded?.TryGetValue(s, out copy) == true;
            var (key, value) = isLoaded ? copy : (segment.Key, segment.Value);
            IndexRange[] ranges = [new(0, past), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            var device = tier == PipelineActorKind.CpuCompute ? CPU : Gpu.Device;
            var keyData = Plain(key, isLoaded ? null : ranges, device, temporaries)
                ?? throw new InvalidOperationException($"cache segment {segment.Key.Name} on {segment.Home} was not loaded for {task}");
            bytes += ReadBytes(key, keyData);
            if (FetchesValueRows(segment))
            {
                var valueHome = segment.Value;
                segments.Add(new CacheSegment(keyData, positions => fetched.Count(TierCopy.GatherPositions(valueHome, positions, device)), compute));
                continue;
            }

            var valueData = (value is null ? null : Plain(value, isLoaded ? null : ranges, device, temporaries))
                ?? throw new InvalidOperationException($"cache segment {segment.Value.Name} on {segment.Home} was not loaded for {task}");
            segments.Add(new CacheSegment(keyData, valueData, compute));
            bytes += ReadBytes(value!, valueData);
        }

        return segments;
    }

    /// <summary>Bytes read of a cache tensor: as stored when compressed, else the positions attended over.</summary>
    private static long ReadBytes(TieredTensor source, Tensor data) =>
        source is CompressedTensor compressed ? compressed.StoredBytes : data.NumberOfElements * data.ElementSize;

    /// <summary>Bytes of the value rows sparse attention fetched during one compute (parts run on one thread each).</summary>
    private sealed class ValueRowBytes
    {
        public long Bytes { get; private set; }

        public Tensor Count(Tensor rows)
        {
            Bytes += rows.NumberOfElements * rows.ElementSize;
            return rows;
        }
    }

    // ---- bookkeeping ------------------------------------------------------------------------------------------

    private bool LastPart(BlockTask task)
    {
        int parts = _router.Route(task).Count;
        if (parts == 1)
        {
            return true;
        }

        return _partsLeft.AddOrUpdate(task, parts - 1, (_, left) => left - 1) == 0;
    }

    private void FinishTask(BlockTask task)
    {
        var (i, j, k) = (task.Token, task.Layer, task.Batch);
        switch (task.Kind)
        {
            case TaskKind.ComputeLayer:
                if (_splitOutputs.TryRemove((i, j, k), out var split))
                {
                    var output = split.Value;
                    _hiddenOut[(i, j, k)] = output.Hidden;
                    _cacheNew[(i, j, k)] = (output.Key, output.Value);
                }

                if (_hiddenIn.TryRemove((i, j, k), out var input))
                {
                    input.Dispose();
                }

                if (_cacheLoaded.TryRemove((i, j, k), out var loaded))
                {
                    DisposeAll(loaded.Values.SelectMany(p => new[] { p.Key, p.Value }));
                }

                if (k == _policy.NumGpuBatches - 1 && _weights.TryRemove((i, j), out var weights))
                {
                    DisposeAll(weights);
                }

                if (!_layers[j].HasKvCache || i == Block.GenLen - 1)
                {
                    // Nothing will store these entries (no cache, or the last token): FlexGen pops them too.
                    if (_cacheNew.TryRemove((i, j, k), out var unused))
                    {
                        unused.Key.Dispose();
                        unused.Value.Dispose();
                    }
                }

                break;
            case TaskKind.StoreCache:
                if (_cacheNew.TryRemove((i, j, k), out var stored))
                {
                    stored.Key.Dispose();
                    stored.Value.Dispose();
                }

                break;
        }

        _partsLeft.TryRemove(task, out _);
    }

    /// <summary>
    /// Makes several tier tensors that are stored together: when one cannot be made (e.g. the GPU tier is full), the
    /// ones already made are disposed, so their bytes do not stay booked on the tier with nothing left to free them.
    /// </summary>
    private static DeviceTensor[] AllOrNone(params Func<DeviceTensor>[] makers)
    {
        var made = new List<DeviceTensor>(makers.Length);
        try
        {
            foreach (var make in makers)
            {
                made.Add(make());
            }

            return made.ToArray();
        }
        catch
        {
            DisposeAll(made);
            throw;
        }
    }

    private static void DisposeAll(IEnumerable<TieredTensor?> tensors)
    {
        foreach (var t in tensors)
        {
            t?.Dispose();
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _cancelled = true;
        DisposeAll(_weights.Values.SelectMany(w => w));
        DisposeAll(_cacheLoaded.Values.SelectMany(l => l.Values.SelectMany(p => new[] { p.Key, p.Value })));
        DisposeAll(_cacheNew.Values.SelectMany(p => new TieredTensor[] { p.Key, p.Value }));
        DisposeAll(_hiddenIn.Values);
        DisposeAll(_hiddenOut.Values);
        DisposeAll(_parked.Values);
        DisposeAll(_splitOutputs.Values.Where(l => l.IsValueCreated).SelectMany(l => new TieredTensor[] { l.Value.Hidden, l.Value.Key, l.Value.Value }));
        _kvCache?.Dispose();
        _weights.Clear();
        _cacheLoaded.Clear();
        _cacheNew.Clear();
        _hiddenIn.Clear();
        _hiddenOut.Clear();
        _parked.Clear();
        _splitOutputs.Clear();
        _cache.Clear();
        _generator?.Dispose();
    }

    private sealed record SplitOutput(DeviceTensor Hidden, DeviceTensor Key, DeviceTensor Value);

    /// <summary>One segment of a cache home along dim 1: rows [Start, Start + Length) of batch * kv_heads.</summary>
    private sealed record CacheSegmentHome(TierKind Home, long Start, long Length, TieredTensor Key, TieredTensor Value);

    /// <summary>The k and v homes of one attention layer and GPU batch, and their segments.</summary>
    private sealed class CacheHome
    {
        public CacheHome(TieredTensor key, TieredTensor value)
        {
            Key = key;
            Value = value;
            if (key is MixedTensor mixedKey && value is MixedTensor mixedValue)
            {
                Segments = mixedKey.Segments.Select((s, n) => new CacheSegmentHome(HomeOf(s), mixedKey.SegmentStarts[n], s.Shape[1], s, mixedValue.Segments[n])).ToArray();
            }
            else
            {
                Segments = [new CacheSegmentHome(HomeOf(key), 0, key.Shape[1], key, value)];
            }
        }

        public TieredTensor Key { get; }

        public TieredTensor Value { get; }

        public IReadOnlyList<CacheSegmentHome> Segments { get; }
    }
}
