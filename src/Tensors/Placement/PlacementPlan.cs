using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using ScalarType = TorchSharp.torch.ScalarType;

namespace FlexGen.Tensors.Placement;

/// <summary>
/// The placement of every weight, KV cache and activation for a policy, a model and a batch geometry, computed
/// before anything is allocated (FlexGen's rules, flexllmgen/flex_opt.py and pytorch_backend.py), with the bytes
/// each tier will hold. <see cref="Create"/> refuses what cannot run and what exceeds a tier's capacity.
/// </summary>
public sealed partial record PlacementPlan
{
    private PlacementPlan(ModelConfig config, Policy policy, int promptLen, int genLen,
        IReadOnlyList<LayerPlacement> layers, CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes, bool computesOnCpu,
        int prefetchSteps)
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
        GroupedCompute = ComputesBatchesTogether(config, policy, computesOnCpu);
        PrefetchSteps = prefetchSteps;
        WeightLookahead = WeightLookaheadOf(policy, computesOnCpu, prefetchSteps);
        Need = NeedOf(config, policy, promptLen, genLen, WeightSummary.Of(config, layers, computeDtypeBytes, policy, computesOnCpu, prefetchSteps), cache,
            activations, computeDtypeBytes, GroupedCompute, prefetchSteps);
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

    /// <summary>How many layers ahead of the running compute its weights load (see <see cref="WeightLookaheadOf"/>).</summary>
    public int WeightLookahead { get; }

    /// <summary>
    /// With overlap, how many compute steps (a layer of one GPU batch) the loads and stores may run ahead of the compute:
    /// the pipeline's <c>prefetch-steps</c>, 1 in FlexGen. <see cref="Need"/> counts the loaded cache and hidden states of
    /// every step in flight (1 + this), and the weights of the layers it reaches (<see cref="WeightLookaheadOf"/>).
    /// </summary>
    public int PrefetchSteps { get; }

    /// <summary>
    /// How many layers ahead of the running compute the weight loads may run, with overlap: FlexGen's 1 (the next layer
    /// loads while this one computes), or 2 when the compute runs on the CPU. With sep_layer the layers alternate between
    /// attention (a third of a block's weights) and MLP (two thirds); one layer ahead, the disk idles behind each MLP
    /// compute and the compute waits behind each MLP load (OPT-1.3B float32, 32 x 2, weights on disk: 25.7 token/s; two
    /// ahead: 29.2; a whole block as one layer: 30.3). The GPU tier is CPU memory there, where one more layer's buffers
    /// (<see cref="MemoryNeed"/> counts them) cost little; with CUDA its memory is what the policy spends, so FlexGen's 1.
    /// Loads let run <paramref name="prefetchSteps"/> compute steps ahead reach further where that is more: a weight load
    /// is issued at the first GPU batch's step of the layer before its own, so P steps ahead are 1 + (P - 1) / K layers.
    /// </summary>
    /// <param name="prefetchSteps">The pipeline's <c>prefetch-steps</c> (the dispatcher's gate for every load).</param>
    public static int WeightLookaheadOf(Policy policy, bool computesOnCpu, int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentOutOfRangeException.ThrowIfLessThan(prefetchSteps, 1);
        if (!policy.Overlap) return 1;
        return Math.Max(computesOnCpu ? 2 : 1, 1 + ((prefetchSteps - 1) / policy.NumGpuBatches));
    }

    /// <summary>The GPU batches of a layer compute together (see <see cref="ComputesBatchesTogether"/>).</summary>
    public bool GroupedCompute { get; }

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
    /// <param name="computesOnCpu">The GPU tier's compute runs on the CPU (no CUDA): decides <see cref="GroupedCompute"/> and whether streamed disk weights are staged in their stored dtype (<see cref="Need"/>).</param>
    /// <param name="stage">The layers a pipeline stage holds (null: the whole model): only they are placed, and only
    /// their attention layers have a cache.</param>
    /// <param name="prefetchSteps">How many compute steps the loads may run ahead (<see cref="PrefetchSteps"/>).</param>
    /// <exception cref="TierCapacityExceededException">a tier would hold more than its capacity, or need more than its budget.</exception>
    public static PlacementPlan Create(ModelConfig config, Policy policy, int promptLen, int genLen,
        TierCapacities? capacities = null, TierBudgets? budgets = null, int computeDtypeBytes = 2, bool computesOnCpu = false,
        LayerRange? stage = null, int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentOutOfRangeException.ThrowIfLessThan(computeDtypeBytes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(prefetchSteps, 1);
        CheckGeometry(config, promptLen, genLen);
        budgets ??= TierBudgets.Unlimited;
        var cacheDtype = CacheDtype(config, policy, computesOnCpu, computeDtypeBytes);
        if (cacheDtype == ScalarType.Float32)
        {
            try
            {
                return Create(config, policy, promptLen, genLen, capacities, budgets, computeDtypeBytes, computesOnCpu, stage, prefetchSteps, cacheDtype);
            }
            catch (TierCapacityExceededException)
            {
                // Too large in float32: FlexGen's float16 cache, half the bytes (refused below if that does not fit either).
                cacheDtype = ScalarType.Float16;
            }
        }

        return Create(config, policy, promptLen, genLen, capacities, budgets, computeDtypeBytes, computesOnCpu, stage, prefetchSteps, cacheDtype);
    }

    /// <summary>
    /// Whether the cache is kept in the compute dtype (float32, or bfloat16: <see cref="CacheDtype"/>), where the budgets
    /// allow a float32 one: when the computation runs on the CPU, an uncompressed cache without a disk share is read by
    /// CPU attention, which computes in float32 (<c>SegmentAttention.AttentionCompute</c>), and the cache then holds the
    /// compute's own values exactly: a bfloat16 compute's keys and values are bfloat16, so its cache is too, half a float32
    /// one's bytes with the same results (<c>CpuDecodeAttention</c> widens bfloat16 and float16 in registers). A float16
    /// cache was once widened whole at every decode step (OPT-1.3B, bfloat16, 16 x 2, prompt 512: 9.4-9.7 token/s against
    /// 22-27 in float32), and FlexGen's float16 would round a float32 compute's entries. On disk it stays float16: reading
    /// twice the bytes costs more than widening them. With CUDA it stays float16 (FlexGen's placement), even for a
    /// CPU-homed cache under cpu_cache_compute.
    /// </summary>
    public static bool KeepsCacheInComputeDtype(ModelConfig config, Policy policy, bool computesOnCpu)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        return computesOnCpu && !policy.CompressCache && CacheRows(config, policy).Disk == 0;
    }

    /// <summary>
    /// The cache's stored dtype as far as the placement decides it: the compute's (float32 for a compute element of 4
    /// bytes, else bfloat16, the CPU's other compute dtype) where <see cref="KeepsCacheInComputeDtype"/>, else FlexGen's
    /// float16. <see cref="Create(ModelConfig, Policy, int, int, TierCapacities?, TierBudgets?, int, bool, LayerRange?, int)"/>
    /// falls back to float16 where the budgets do not hold a float32 cache.
    /// </summary>
    public static ScalarType CacheDtype(ModelConfig config, Policy policy, bool computesOnCpu, int computeDtypeBytes) =>
        !KeepsCacheInComputeDtype(config, policy, computesOnCpu) ? ScalarType.Float16
        : computeDtypeBytes >= 4 ? ScalarType.Float32
        : ScalarType.BFloat16;

    private static PlacementPlan Create(ModelConfig config, Policy policy, int promptLen, int genLen,
        TierCapacities? capacities, TierBudgets budgets, int computeDtypeBytes, bool computesOnCpu, LayerRange? stage,
        int prefetchSteps, ScalarType cacheDtype)
    {
        var cache = PlaceCache(config, policy, promptLen, genLen, config.NumBlocks, cacheDtype);
        var activations = PlaceActivations(config, policy, promptLen);
        // The byte formulas first: a model too large for a budget is refused before its layers are laid out (they count
        // the whole model, so a stage is checked against its laid-out layers only).
        if (budgets != TierBudgets.Unlimited && stage is null)
        {
            CheckBudgets(EstimateNeed(config, policy, promptLen, genLen, cache, activations, computeDtypeBytes, computesOnCpu, prefetchSteps), budgets);
        }

        var layers = PlaceLayers(config, policy, computeDtypeBytes);
        if (stage is not null)
        {
            if (stage.Total != layers.Length)
                throw new PlacementException($"Stage {stage} does not fit {config.Name}, which has {layers.Length} layers.");
            layers = layers[stage.First..stage.End];
        }

        if (layers.Count(l => l.Layer.HasKvCache) != cache.AttentionLayers)
        {
            cache = PlaceCache(config, policy, promptLen, genLen, layers.Count(l => l.Layer.HasKvCache), cacheDtype);
        }

        var plan = new PlacementPlan(config, policy, promptLen, genLen, layers, cache, activations, computeDtypeBytes, computesOnCpu, prefetchSteps);
        plan.CheckCapacities(capacities ?? TierCapacities.Unlimited);
        CheckBudgets(plan.Need, budgets);
        return plan;
    }

    /// <summary>
    /// Whether the engine computes the GPU batches of a layer together (one matmul over all their rows, attention per
    /// batch): on the CPU a matmul over few rows is bound by reading the weight (3-4x less efficient per FLOP at 8 rows
    /// than at 32). The price is every batch's working activations of a layer held at once (<see cref="MemoryNeed"/>),
    /// so only where no cache is loaded per batch (the whole cache attended in place on the GPU tier) and without CPU
    /// attention (whose parts split each batch's rows). The one rule the engine's schedule, the memory need and the
    /// planner's terms (<c>EngineTerms.GroupedBatches</c>) follow.
    /// </summary>
    /// <param name="computesOnCpu">The GPU tier's compute runs on the CPU (its memory is CPU memory: no CUDA).</param>
    public static bool ComputesBatchesTogether(ModelConfig config, Policy policy, bool computesOnCpu)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        if (!computesOnCpu || policy.NumGpuBatches == 1 || policy.CpuCacheCompute) return false;
        var (_, cpuRows, diskRows) = CacheRows(config, policy);
        return cpuRows == 0 && diskRows == 0;
    }

    /// <summary>Rows of the cache's dim 1 (gpu_batch_size * kv_heads) on each tier: one tier's whole, or the percentages' split.</summary>
    private static (long Gpu, long Cpu, long Disk) CacheRows(ModelConfig config, Policy policy)
    {
        long dim1 = policy.GpuBatchSize * (long)config.KvHeads;
        return policy.CacheGpuPercent == 100 ? (dim1, 0, 0)
            : policy.CacheCpuPercent == 100 ? (0, dim1, 0)
            : policy.CacheDiskPercent == 100 ? (0, 0, dim1)
            : CachePlacement.SplitSegments(dim1, policy.CacheGpuPercent, policy.CacheCpuPercent, config.KvHeads);
    }

    private static LayerPlacement[] PlaceLayers(ModelConfig config, Policy policy, int computeDtypeBytes) =>
        config.Layers(policy.SepLayer)
            .Select(layer => new LayerPlacement(layer,
                layer.WeightGroups.SelectMany(group => PlaceWeightGroup(group, policy, computeDtypeBytes)).ToArray()))
            .ToArray();

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
    private static CachePlacement PlaceCache(ModelConfig config, Policy policy, int promptLen, int genLen, int attentionLayers,
        ScalarType dtype)
    {
        int elementBytes = TensorShapes.ElementSize(dtype);
        long kvHeads = config.KvHeads;
        long[] shape = [promptLen + genLen - 1L, policy.GpuBatchSize * kvHeads, config.HeadDim];
        long dim1 = shape[1];
        long rowBytes = shape[0] * shape[2] * elementBytes; // bytes of one dim-1 row of one k or v tensor

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
                compression, attentionLayers, policy.NumGpuBatches, TierBytes.On(tier, bytes), dtype);
        }

        if (policy.CompressCache)
            throw new PlacementException(
                $"A compressed KV cache must live on one tier, but the cache percentages split it (gpu " +
                $"{policy.CacheGpuPercent}%, cpu {policy.CacheCpuPercent}%, disk {policy.CacheDiskPercent}%); " +
                "FlexGen refuses this too. Put the whole cache on one tier or turn compress_cache off.");

        var (gpuLength, cpuLength, diskLength) = CacheRows(config, policy);

        if (policy.CpuCacheCompute && policy.AttnSparsity < 1 && gpuLength > 0)
            throw new PlacementException(
                $"Sparse attention (Policy.AttnSparsity = {policy.AttnSparsity}) with cpu_cache_compute and a cache " +
                $"split with a GPU segment ({gpuLength} of {dim1} rows) is not supported: FlexGen computes that case " +
                "in two parts and asserts dense attention.");

        return new CachePlacement(shape, null, gpuLength, cpuLength, diskLength, null, attentionLayers,
            policy.NumGpuBatches, new TierBytes(gpuLength * rowBytes, cpuLength * rowBytes, diskLength * rowBytes), dtype);
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
