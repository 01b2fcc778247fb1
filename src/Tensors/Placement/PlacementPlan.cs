using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Placement;

/// <summary>
/// Where one weight tensor lives (FlexGen's <c>init_weight_list</c>).
/// </summary>
/// <param name="Spec">The tensor.</param>
/// <param name="Home">Its home tier.</param>
/// <param name="MidPercent">Where the midpoint of its cumulative size falls on the 0..100 line of its group.</param>
/// <param name="Compressed">Stored 4-bit compressed (compress_weight and rank &gt;= 2).</param>
/// <param name="Pinned">Pinned host memory (CPU home and: rank &lt; 2, or pin_weight).</param>
/// <param name="Bytes">Bytes at home: the float16 tensor (on the GPU tier: in the compute dtype, converted once at load),
/// or packed data + scales when compressed.</param>
public sealed record WeightPlacement(WeightSpec Spec, TierKind Home, double MidPercent, bool Compressed, bool Pinned, long Bytes);

/// <summary>The weights of one layer of the execution order, in FlexGen's order.</summary>
public sealed record LayerPlacement(LayerSpec Layer, IReadOnlyList<WeightPlacement> Weights)
{
    public TierBytes Bytes => Weights.Aggregate(TierBytes.Zero, (sum, w) => sum + TierBytes.On(w.Home, w.Bytes));
}

/// <summary>
/// Where the KV cache lives. One k and one v tensor per attention layer and GPU batch, each of
/// <see cref="Shape"/> = (prompt_len + gen_len - 1, gpu_batch_size * kv_heads, head_dim), float16 or compressed.
/// A whole-tier cache has <see cref="Home"/> set; a mixed one (<see cref="Home"/> null) is split along dim 1 into
/// GPU, CPU and disk segments of <see cref="GpuLength"/>, <see cref="CpuLength"/>, <see cref="DiskLength"/> rows.
/// </summary>
public sealed record CachePlacement(
    IReadOnlyList<long> Shape,
    TierKind? Home,
    long GpuLength,
    long CpuLength,
    long DiskLength,
    CompressionConfig? Compression,
    int AttentionLayers,
    int NumGpuBatches,
    TierBytes BytesPerTensor)
{
    public bool IsMixed => Home is null;

    public bool Compressed => Compression is not null;

    /// <summary>Number of cache tensors: k and v per attention layer and GPU batch.</summary>
    public long TensorCount => 2L * AttentionLayers * NumGpuBatches;

    public TierBytes TotalBytes => BytesPerTensor * TensorCount;

    /// <summary>
    /// FlexGen's split of a mixed cache's dim 1 (<c>TorchMixedDevice.init_cache_one_gpu_batch</c>): the GPU and CPU
    /// segments are their percentage of <paramref name="extent"/> rounded down to a multiple of
    /// <paramref name="granularity"/> (kv_heads: whole sequences); the last one (CPU when the disk share is 0, else disk) takes the rest.
    /// </summary>
    public static (long Gpu, long Cpu, long Disk) SplitSegments(long extent, double gpuPercent, double cpuPercent, long granularity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(granularity, 1);
        long gpu = (long)(extent * gpuPercent / 100) / granularity * granularity;
        if (Math.Abs(100 - gpuPercent - cpuPercent) < Policy.PercentTolerance)
        {
            return (gpu, extent - gpu, 0);
        }

        long cpu = (long)(extent * cpuPercent / 100) / granularity * granularity;
        return (gpu, cpu, extent - gpu - cpu);
    }

    /// <summary>The dim-1 segment length on a tier (the whole dim 1 for a whole-tier home).</summary>
    public long SegmentLength(TierKind tier) => tier switch
    {
        TierKind.Gpu => GpuLength,
        TierKind.Cpu => CpuLength,
        TierKind.Disk => DiskLength,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };
}

/// <summary>
/// Where hidden states between layers are parked (FlexGen's <c>act_home</c>). <see cref="Bytes"/> is the most held
/// at once: one (gpu_batch_size, prompt_len, h) float16 tensor per GPU batch, during prefill.
/// </summary>
public sealed record ActivationPlacement(TierKind Home, long Bytes);

/// <summary>
/// The placement of every weight, KV cache and activation for a policy, a model and a batch geometry, computed
/// before anything is allocated (FlexGen's rules, flexllmgen/flex_opt.py and pytorch_backend.py), with the bytes
/// each tier will hold. <see cref="Create"/> refuses what cannot run and what exceeds a tier's capacity.
/// </summary>
public sealed record PlacementPlan
{
    private PlacementPlan(ModelConfig config, Policy policy, int promptLen, int genLen,
        IReadOnlyList<LayerPlacement> layers, CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes)
    {
        Config = config;
        Policy = policy;
        PromptLen = promptLen;
        GenLen = genLen;
        Layers = layers;
        Cache = cache;
        Activations = activations;
        WeightBytes = layers.Aggregate(TierBytes.Zero, (sum, l) => sum + l.Bytes);
        ComputeDtypeBytes = computeDtypeBytes;
        Need = NeedOf(config, policy, promptLen, genLen, WeightSummary.Of(config, layers, computeDtypeBytes), cache, activations, computeDtypeBytes);
    }

    public ModelConfig Config { get; }

    public Policy Policy { get; }

    public int PromptLen { get; }

    public int GenLen { get; }

    /// <summary>One entry per layer of the execution order (index j).</summary>
    public IReadOnlyList<LayerPlacement> Layers { get; }

    public CachePlacement Cache { get; }

    public ActivationPlacement Activations { get; }

    public TierBytes WeightBytes { get; }

    public TierBytes CacheBytes => Cache.TotalBytes;

    public TierBytes HiddenBytes => TierBytes.On(Activations.Home, Activations.Bytes);

    public TierBytes TotalBytes => WeightBytes + CacheBytes + HiddenBytes;

    /// <summary>Bytes of one element of the compute's working buffers (4: float32, 2: float16 / bfloat16).</summary>
    public int ComputeDtypeBytes { get; }

    /// <summary>What the run needs per tier: the homes above and the working buffers (see <see cref="MemoryNeed"/>).</summary>
    public MemoryNeed Need { get; }

    /// <summary>Home of weight <paramref name="weightIndex"/> of layer <paramref name="layerIndex"/> (j).</summary>
    public WeightPlacement Weight(int layerIndex, int weightIndex) => Layers[layerIndex].Weights[weightIndex];

    /// <summary>
    /// Computes the plan. <paramref name="promptLen"/> and <paramref name="genLen"/> are the batch geometry
    /// (the cache holds prompt_len + gen_len - 1 positions).
    /// </summary>
    /// <exception cref="PlacementException">a rule FlexGen also refuses (split activations, compressed mixed
    /// cache, ...), or a geometry the model cannot hold.</exception>
    /// <param name="capacities">Caps on the homes of each tier (null: none).</param>
    /// <param name="budgets">The memory each tier may use for the run, homes and working buffers (null: unlimited):
    /// checked by the byte formulas before the layers are laid out, then against the plan (<see cref="CheckBudgets"/>).</param>
    /// <param name="computeDtypeBytes">Bytes of a compute element (the working buffers' dtype).</param>
    /// <exception cref="TierCapacityExceededException">a tier would hold more than its capacity, or need more than its budget.</exception>
    public static PlacementPlan Create(ModelConfig config, Policy policy, int promptLen, int genLen,
        TierCapacities? capacities = null, TierBudgets? budgets = null, int computeDtypeBytes = 2)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentOutOfRangeException.ThrowIfLessThan(computeDtypeBytes, 1);
        CheckGeometry(config, promptLen, genLen);
        budgets ??= TierBudgets.Unlimited;

        var cache = PlaceCache(config, policy, promptLen, genLen, config.NumBlocks);
        var activations = PlaceActivations(config, policy, promptLen);
        // The byte formulas first: a model too large for a budget is refused before its layers are laid out.
        if (budgets != TierBudgets.Unlimited)
        {
            CheckBudgets(EstimateNeed(config, policy, promptLen, genLen, cache, activations, computeDtypeBytes), budgets);
        }

        var layers = PlaceLayers(config, policy, computeDtypeBytes);
        if (layers.Count(l => l.Layer.HasKvCache) != cache.AttentionLayers)
        {
            cache = PlaceCache(config, policy, promptLen, genLen, layers.Count(l => l.Layer.HasKvCache));
        }

        var plan = new PlacementPlan(config, policy, promptLen, genLen, layers, cache, activations, computeDtypeBytes);
        plan.CheckCapacities(capacities ?? TierCapacities.Unlimited);
        CheckBudgets(plan.Need, budgets);
        return plan;
    }

    /// <summary>
    /// What a run of <paramref name="config"/> under <paramref name="policy"/> needs per tier, from the byte formulas:
    /// the weights of a model of any depth from a 1- and a 2-block copy of it (its blocks are alike), so nothing is laid
    /// out per layer (<see cref="ModelConfig.WithBlocks"/>); equal to <see cref="Need"/> of the plan.
    /// </summary>
    public static MemoryNeed EstimateNeed(ModelConfig config, Policy policy, int promptLen, int genLen, int computeDtypeBytes = 2)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        CheckGeometry(config, promptLen, genLen);
        return EstimateNeed(config, policy, promptLen, genLen, PlaceCache(config, policy, promptLen, genLen, config.NumBlocks),
            PlaceActivations(config, policy, promptLen), computeDtypeBytes);
    }

    /// <summary>
    /// The budget rule: each tier's <paramref name="need"/> (homes and working buffers) must fit its budget; without
    /// CUDA (<see cref="TierBudgets.GpuInCpuMemory"/>) the GPU tier's need counts against the CPU budget too.
    /// </summary>
    /// <exception cref="TierCapacityExceededException">the first tier (GPU, CPU, disk) over its budget: tier, need with its
    /// breakdown, budget and where the budget came from.</exception>
    public static void CheckBudgets(MemoryNeed need, TierBudgets budgets)
    {
        ArgumentNullException.ThrowIfNull(need);
        ArgumentNullException.ThrowIfNull(budgets);
        if (budgets.Gpu is { } gpu && need.Gpu.Total > gpu.Bytes)
        {
            throw new TierCapacityExceededException(TierKind.Gpu, need.Gpu.Total, gpu, need, need.Gpu.Breakdown());
        }

        if (budgets.Cpu is { } cpu)
        {
            bool shared = budgets.GpuInCpuMemory && !need.Gpu.IsZero;
            long total = shared ? TierNeed.Sum(need.Cpu.Total, need.Gpu.Total) : need.Cpu.Total;
            if (total > cpu.Bytes)
            {
                string breakdown = !shared ? need.Cpu.Breakdown()
                    : need.Cpu.IsZero ? $"gpu {need.Gpu.Breakdown()}"
                    : $"cpu {need.Cpu.Breakdown()}; gpu {need.Gpu.Breakdown()}";
                throw new TierCapacityExceededException(TierKind.Cpu, total, cpu, need, breakdown, shared);
            }
        }

        if (budgets.Disk is { } disk && need.Disk.Total > disk.Bytes)
        {
            throw new TierCapacityExceededException(TierKind.Disk, need.Disk.Total, disk, need, need.Disk.Breakdown());
        }
    }

    private static LayerPlacement[] PlaceLayers(ModelConfig config, Policy policy, int computeDtypeBytes) =>
        config.Layers(policy.SepLayer)
            .Select(layer => new LayerPlacement(layer,
                layer.WeightGroups.SelectMany(group => PlaceWeightGroup(group, policy, computeDtypeBytes)).ToArray()))
            .ToArray();

    private static MemoryNeed EstimateNeed(ModelConfig config, Policy policy, int promptLen, int genLen,
        CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes)
    {
        WeightSummary weights;
        if (config.NumBlocks > 2)
        {
            var (one, two) = (config.WithBlocks(1), config.WithBlocks(2));
            // Every block places alike: the weights of N blocks are those of one block plus N - 1 times a block's.
            var a = WeightSummary.Of(one, PlaceLayers(one, policy, computeDtypeBytes), computeDtypeBytes);
            var b = WeightSummary.Of(two, PlaceLayers(two, policy, computeDtypeBytes), computeDtypeBytes);
            long more = config.NumBlocks - 1L;
            weights = new WeightSummary(
                new TierBytes(
                    TierNeed.Sum(a.Bytes.Gpu, TierNeed.Product(b.Bytes.Gpu - a.Bytes.Gpu, more)),
                    TierNeed.Sum(a.Bytes.Cpu, TierNeed.Product(b.Bytes.Cpu - a.Bytes.Cpu, more)),
                    TierNeed.Sum(a.Bytes.Disk, TierNeed.Product(b.Bytes.Disk - a.Bytes.Disk, more))),
                Math.Max(a.LargestStreamedLayer, b.LargestStreamedLayer),
                Math.Max(a.WidestIntermediate, b.WidestIntermediate));
        }
        else
        {
            weights = WeightSummary.Of(config, PlaceLayers(config, policy, computeDtypeBytes), computeDtypeBytes);
        }

        return NeedOf(config, policy, promptLen, genLen, weights, cache, activations, computeDtypeBytes);
    }

    /// <summary>The formulas of <see cref="MemoryNeed"/> over a weight summary, the cache and the activations.</summary>
    private static MemoryNeed NeedOf(ModelConfig config, Policy policy, int promptLen, int genLen, WeightSummary weights,
        CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes)
    {
        long b = policy.GpuBatchSize;
        long s = promptLen;
        long seq = promptLen + genLen - 1L;
        long h = config.HiddenSize;
        long heads = config.NumHeads;
        long copies = policy.Overlap ? 2 : 1; // double buffering: the next load runs while this compute does

        // Cache homes: k and v per attention layer and GPU batch, on the tiers the plan splits them over.
        long tensors = cache.TensorCount;
        var cacheHomes = new TierBytes(
            TierNeed.Product(cache.BytesPerTensor.Gpu, tensors),
            TierNeed.Product(cache.BytesPerTensor.Cpu, tensors),
            TierNeed.Product(cache.BytesPerTensor.Disk, tensors));
        var hiddenHome = TierBytes.On(activations.Home, activations.Bytes);

        // Loaded cache: k and v of one layer and GPU batch, float16, copied from their homes to where attention runs.
        long rowBytes = TierNeed.Product(cache.Shape[0], cache.Shape[2], config.DtypeBytes);
        long offGpuRows = policy.CpuCacheCompute ? 0 : cache.CpuLength + cache.DiskLength;
        long offCpuRows = policy.CpuCacheCompute ? cache.DiskLength : 0;
        long loadedCacheGpu = TierNeed.Product(2, offGpuRows, rowBytes, copies);
        long loadedCacheCpu = TierNeed.Product(2, offCpuRows, rowBytes, copies);

        long loadedHidden = activations.Home == TierKind.Gpu ? 0 : TierNeed.Product(b, s, h, config.DtypeBytes, copies);
        long widest = Math.Max(
            TierNeed.Product(s, weights.WidestIntermediate),
            Math.Max(TierNeed.Product(heads, s, s), TierNeed.Product(heads, seq)));
        long activationBytes = TierNeed.Product(computeDtypeBytes, b,
            TierNeed.Sum(TierNeed.Product(2, s, h), widest, config.VocabSize));

        return new MemoryNeed(
            new TierNeed(weights.Bytes.Gpu, cacheHomes.Gpu, hiddenHome.Gpu,
                TierNeed.Product(weights.LargestStreamedLayer, copies), loadedCacheGpu, loadedHidden, activationBytes),
            new TierNeed(weights.Bytes.Cpu, cacheHomes.Cpu, hiddenHome.Cpu, 0, loadedCacheCpu, 0, 0),
            new TierNeed(weights.Bytes.Disk, cacheHomes.Disk, hiddenHome.Disk, 0, 0, 0, 0));
    }

    /// <summary>
    /// What the need formulas take from the weights: bytes per tier, the largest layer's bytes streamed to the GPU
    /// (homed elsewhere: converted to the compute dtype as they are loaded; or compressed: float16 during compute), the
    /// widest block intermediate (largest block weight / h).
    /// </summary>
    private sealed record WeightSummary(TierBytes Bytes, long LargestStreamedLayer, long WidestIntermediate)
    {
        public static WeightSummary Of(ModelConfig config, IReadOnlyList<LayerPlacement> layers, int computeDtypeBytes)
        {
            long streamed = 0, widest = config.HiddenSize;
            var bytes = TierBytes.Zero;
            foreach (var layer in layers)
            {
                bytes += layer.Bytes;
                streamed = Math.Max(streamed, layer.Weights.Where(w => w.Home != TierKind.Gpu || w.Compressed)
                    .Sum(w => w.Compressed ? w.Spec.Bytes : w.Spec.ElementCount * computeDtypeBytes));
                if (layer.Layer.BlockIndex is not null && config.HiddenSize > 0)
                {
                    foreach (var w in layer.Weights.Where(w => w.Spec.Rank >= 2))
                        widest = Math.Max(widest, w.Spec.ElementCount / config.HiddenSize);
                }
            }

            return new WeightSummary(bytes, streamed, widest);
        }
    }

    // FlexGen's init_weight_list: the tensors of one group lie end to end on a 0..100 line; each goes to the tier
    // whose band (disk | cpu | gpu, in that order) holds the midpoint of its span. A plain weight homed on the GPU tier
    // (the compute tier) is kept in the compute dtype, converted once at load: its bytes count that dtype.
    private static IEnumerable<WeightPlacement> PlaceWeightGroup(IReadOnlyList<WeightSpec> group, Policy policy, int computeDtypeBytes)
    {
        double diskEnd = policy.WDiskPercent;
        double cpuEnd = diskEnd + policy.WCpuPercent;
        long total = group.Sum(w => w.ElementCount);
        long cumulative = 0;
        foreach (var spec in group)
        {
            long size = spec.ElementCount;
            cumulative += size;
            double midPercent = (cumulative - size / 2.0) / total * 100;
            // get_choice: the first band whose cumulative end lies above the midpoint, else the last (gpu).
            var home = midPercent < diskEnd ? TierKind.Disk
                : midPercent < cpuEnd ? TierKind.Cpu
                : TierKind.Gpu;
            // 1-D tensors (biases, layer norms) are never compressed and always pinned on the CPU.
            bool matrix = spec.Rank >= 2;
            bool compressed = matrix && policy.CompressWeight;
            bool pinned = home == TierKind.Cpu && (!matrix || policy.PinWeight);
            long bytes = compressed
                ? CompressedBytes(spec.Shape, policy.CompWeightConfig, $"weight {spec.FileName}",
                    "Policy.CompWeightConfig")
                : home == TierKind.Gpu ? spec.ElementCount * computeDtypeBytes : spec.Bytes;
            yield return new WeightPlacement(spec, home, midPercent, compressed, pinned, bytes);
        }
    }

    // SelfAttention.init_cache_one_gpu_batch and TorchMixedDevice.init_cache_one_gpu_batch, with the family's
    // KV geometry: kv_heads rows per sequence (fewer than the query heads with grouped-query attention).
    private static CachePlacement PlaceCache(ModelConfig config, Policy policy, int promptLen, int genLen, int attentionLayers)
    {
        long kvHeads = config.KvHeads;
        long[] shape = [promptLen + genLen - 1L, policy.GpuBatchSize * kvHeads, config.HeadDim];
        long dim1 = shape[1];
        long rowBytes = shape[0] * shape[2] * config.DtypeBytes; // bytes of one dim-1 row of one k or v tensor

        TierKind? home = policy.CacheGpuPercent == 100 ? TierKind.Gpu
            : policy.CacheCpuPercent == 100 ? TierKind.Cpu
            : policy.CacheDiskPercent == 100 ? TierKind.Disk
            : null;

        if (home is { } tier)
        {
            CompressionConfig? compression = policy.CompressCache ? policy.CompCacheConfig : null;
            long bytes = compression is null
                ? dim1 * rowBytes
                : CompressedBytes(shape, compression, "the KV cache", "Policy.CompCacheConfig");
            return new CachePlacement(shape, tier,
                tier == TierKind.Gpu ? dim1 : 0, tier == TierKind.Cpu ? dim1 : 0, tier == TierKind.Disk ? dim1 : 0,
                compression, attentionLayers, policy.NumGpuBatches, TierBytes.On(tier, bytes));
        }

        if (policy.CompressCache)
            throw new PlacementException(
                $"A compressed KV cache must live on one tier, but the cache percentages split it (gpu " +
                $"{policy.CacheGpuPercent}%, cpu {policy.CacheCpuPercent}%, disk {policy.CacheDiskPercent}%); " +
                "FlexGen refuses this too. Put the whole cache on one tier or turn compress_cache off.");

        var (gpuLength, cpuLength, diskLength) = CachePlacement.SplitSegments(dim1, policy.CacheGpuPercent, policy.CacheCpuPercent, kvHeads);

        if (policy.CpuCacheCompute && policy.AttnSparsity < 1 && gpuLength > 0)
            throw new PlacementException(
                $"Sparse attention (Policy.AttnSparsity = {policy.AttnSparsity}) with cpu_cache_compute and a cache " +
                $"split with a GPU segment ({gpuLength} of {dim1} rows) is not supported: FlexGen computes that case " +
                "in two parts and asserts dense attention.");

        return new CachePlacement(shape, null, gpuLength, cpuLength, diskLength, null, attentionLayers,
            policy.NumGpuBatches, new TierBytes(gpuLength * rowBytes, cpuLength * rowBytes, diskLength * rowBytes));
    }

    // FlexGen's model __init__: one act home, refused when split.
    private static ActivationPlacement PlaceActivations(ModelConfig config, Policy policy, int promptLen)
    {
        TierKind home = policy.ActGpuPercent == 100 ? TierKind.Gpu
            : policy.ActCpuPercent == 100 ? TierKind.Cpu
            : policy.ActDiskPercent == 100 ? TierKind.Disk
            : throw new PlacementException(
                $"Activations must live on one tier: one of Policy.ActGpuPercent ({policy.ActGpuPercent}), " +
                $"Policy.ActCpuPercent ({policy.ActCpuPercent}) or the disk share ({policy.ActDiskPercent}) must be " +
                "100; splitting activations is not supported (FlexGen refuses it too).");
        return new ActivationPlacement(home,
            config.HiddenBytes((long)policy.GpuBatchSize * policy.NumGpuBatches, promptLen));
    }

    /// <summary>Bytes of FlexGen's compressed layout of a float16 tensor (see <see cref="CompressedLayout"/>).</summary>
    public static long CompressedBytes(IReadOnlyList<long> shape, CompressionConfig config, string what = "tensor",
        string configField = "CompressionConfig") => CompressedLayout.Of(shape, config, what, configField).Bytes;

    private static void CheckGeometry(ModelConfig config, int promptLen, int genLen)
    {
        if (promptLen < 1)
            throw new ArgumentOutOfRangeException(nameof(promptLen), promptLen, "prompt_len must be >= 1.");
        if (genLen < 1)
            throw new ArgumentOutOfRangeException(nameof(genLen), genLen, "gen_len must be >= 1.");
        // A head_dim the model gives (Llama's config.json head_dim) frees the hidden size from being a multiple of the heads.
        if (config.NumHeads < 1 || (!config.HeadDimGiven && config.HiddenSize % config.NumHeads != 0))
            throw new PlacementException(
                $"Model {config.Name}: hidden size {config.HiddenSize} is not a multiple of n_head {config.NumHeads}.");
        if (config.HeadDim < 1)
            throw new PlacementException($"Model {config.Name}: head_dim {config.HeadDim} must be >= 1.");
        if (config.KvHeads < 1 || config.NumHeads % config.KvHeads != 0)
            throw new PlacementException(
                $"Model {config.Name}: n_head {config.NumHeads} is not a multiple of kv_heads {config.KvHeads}.");
        if (!config.Fits(promptLen, genLen))
            throw new PlacementException(
                $"prompt_len {promptLen} + gen_len {genLen} - 1 = {promptLen + genLen - 1L} positions exceed " +
                $"{config.Name}'s max_seq_len {config.MaxSeqLen}.");
    }

    private void CheckCapacities(TierCapacities capacities)
    {
        foreach (var tier in (TierKind[])[TierKind.Gpu, TierKind.Cpu, TierKind.Disk])
        {
            if (capacities[tier] is not { } capacity || TotalBytes[tier] <= capacity)
                continue;
            throw new TierCapacityExceededException(tier, TotalBytes[tier], capacity,
                $"weights {WeightBytes[tier]:N0}, KV cache {CacheBytes[tier]:N0}, hidden {HiddenBytes[tier]:N0}");
        }
    }
}
