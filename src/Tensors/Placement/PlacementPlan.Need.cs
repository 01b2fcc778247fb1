using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using ScalarType = TorchSharp.torch.ScalarType;

namespace FlexGen.Tensors.Placement;

/// <summary>What a plan needs per tier (homes plus working buffers) and the budget rule over it.</summary>
public sealed partial record PlacementPlan
{
    /// <summary>
    /// What a run of <paramref name="config"/> under <paramref name="policy"/> needs per tier, from the byte formulas:
    /// the weights of a model of any depth from a 1- and a 2-block copy of it (its blocks are alike), so nothing is laid
    /// out per layer (<see cref="ModelConfig.WithBlocks"/>); equal to <see cref="Need"/> of the plan (whose cache is in the
    /// compute dtype where <see cref="KeepsCacheInComputeDtype"/> says so and the budgets allow).
    /// </summary>
    /// <param name="computesOnCpu">The GPU tier's compute runs on the CPU: the GPU batches may compute together (<see cref="ComputesBatchesTogether"/>).</param>
    /// <param name="prefetchSteps">How many compute steps the loads may run ahead (<see cref="PrefetchSteps"/>).</param>
    public static MemoryNeed EstimateNeed(ModelConfig config, Policy policy, int promptLen, int genLen, int computeDtypeBytes = 2, bool computesOnCpu = false,
        int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentOutOfRangeException.ThrowIfLessThan(prefetchSteps, 1);
        CheckGeometry(config, promptLen, genLen);
        var cacheDtype = CacheDtype(config, policy, computesOnCpu, computeDtypeBytes);
        return EstimateNeed(config, policy, promptLen, genLen, PlaceCache(config, policy, promptLen, genLen, config.NumBlocks, cacheDtype),
            PlaceActivations(config, policy, promptLen), computeDtypeBytes, computesOnCpu, prefetchSteps);
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

    private static MemoryNeed EstimateNeed(ModelConfig config, Policy policy, int promptLen, int genLen,
        CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes, bool computesOnCpu, int prefetchSteps)
    {
        WeightSummary weights;
        if (config.NumBlocks > 2)
        {
            var (one, two) = (config.WithBlocks(1), config.WithBlocks(2));
            // Every block places alike: the weights of N blocks are those of one block plus N - 1 times a block's.
            var a = WeightSummary.Of(one, PlaceLayers(one, policy, computeDtypeBytes), computeDtypeBytes, policy, computesOnCpu, prefetchSteps);
            var b = WeightSummary.Of(two, PlaceLayers(two, policy, computeDtypeBytes), computeDtypeBytes, policy, computesOnCpu, prefetchSteps);
            long more = config.NumBlocks - 1L;
            weights = new WeightSummary(
                new TierBytes(
                    TierNeed.Sum(a.Bytes.Gpu, TierNeed.Product(b.Bytes.Gpu - a.Bytes.Gpu, more)),
                    TierNeed.Sum(a.Bytes.Cpu, TierNeed.Product(b.Bytes.Cpu - a.Bytes.Cpu, more)),
                    TierNeed.Sum(a.Bytes.Disk, TierNeed.Product(b.Bytes.Disk - a.Bytes.Disk, more))),
                // Two blocks hold every pair of neighbouring layer kinds that N blocks do (the streamed buffers' windows).
                Math.Max(a.Streamed, b.Streamed),
                Math.Max(a.WidestIntermediate, b.WidestIntermediate));
        }
        else
        {
            weights = WeightSummary.Of(config, PlaceLayers(config, policy, computeDtypeBytes), computeDtypeBytes, policy, computesOnCpu, prefetchSteps);
        }

        return NeedOf(config, policy, promptLen, genLen, weights, cache, activations, computeDtypeBytes,
            ComputesBatchesTogether(config, policy, computesOnCpu), prefetchSteps);
    }

    /// <summary>The formulas of <see cref="MemoryNeed"/> over a weight summary, the cache and the activations.</summary>
    private static MemoryNeed NeedOf(ModelConfig config, Policy policy, int promptLen, int genLen, WeightSummary weights,
        CachePlacement cache, ActivationPlacement activations, int computeDtypeBytes, bool groupedCompute, int prefetchSteps)
    {
        long b = policy.GpuBatchSize;
        // Grouped compute holds every GPU batch's loaded hidden states and activations of a layer at once.
        long together = groupedCompute ? policy.NumGpuBatches : 1;
        long s = promptLen;
        long seq = promptLen + genLen - 1L;
        long h = config.HiddenSize;
        long heads = config.NumHeads;
        // The step computing and, with overlap, the prefetchSteps after it whose loads may have run (FlexGen: double buffering).
        long copies = policy.Overlap ? 1L + prefetchSteps : 1;

        // Cache homes: k and v per attention layer and GPU batch, on the tiers the plan splits them over.
        long tensors = cache.TensorCount;
        var cacheHomes = new TierBytes(
            TierNeed.Product(cache.BytesPerTensor.Gpu, tensors),
            TierNeed.Product(cache.BytesPerTensor.Cpu, tensors),
            TierNeed.Product(cache.BytesPerTensor.Disk, tensors));
        var hiddenHome = TierBytes.On(activations.Home, activations.Bytes);

        // Loaded cache: k and v of one layer and GPU batch, as stored, copied from their homes to where attention runs.
        long rowBytes = TierNeed.Product(cache.Shape[0], cache.Shape[2], cache.ElementBytes);
        long offGpuRows = policy.CpuCacheCompute ? 0 : cache.CpuLength + cache.DiskLength;
        long offCpuRows = policy.CpuCacheCompute ? cache.DiskLength : 0;
        long loadedCacheGpu = TierNeed.Product(2, offGpuRows, rowBytes, copies);
        long loadedCacheCpu = TierNeed.Product(2, offCpuRows, rowBytes, copies);

        long loadedHidden = activations.Home == TierKind.Gpu ? 0 : TierNeed.Product(together, b, s, h, config.DtypeBytes, copies);
        long widest = Math.Max(
            TierNeed.Product(s, weights.WidestIntermediate),
            Math.Max(TierNeed.Product(heads, s, s), TierNeed.Product(heads, seq)));
        long activationBytes = TierNeed.Product(together, computeDtypeBytes, b,
            TierNeed.Sum(TierNeed.Product(2, s, h), widest, config.VocabSize));

        return new MemoryNeed(
            new TierNeed(weights.Bytes.Gpu, cacheHomes.Gpu, hiddenHome.Gpu,
                weights.Streamed, loadedCacheGpu, loadedHidden, activationBytes),
            new TierNeed(weights.Bytes.Cpu, cacheHomes.Cpu, hiddenHome.Cpu, 0, loadedCacheCpu, 0, 0),
            new TierNeed(weights.Bytes.Disk, cacheHomes.Disk, hiddenHome.Disk, 0, 0, 0, 0));
    }

    /// <summary>
    /// What the need formulas take from the weights: bytes per tier, the bytes streamed to the GPU (<see cref="StreamedBytes"/>),
    /// the widest block intermediate (largest block weight / h).
    /// </summary>
    private sealed record WeightSummary(TierBytes Bytes, long Streamed, long WidestIntermediate)
    {
        public static WeightSummary Of(ModelConfig config, IReadOnlyList<LayerPlacement> layers, int computeDtypeBytes, Policy policy, bool computesOnCpu,
            int prefetchSteps)
        {
            long widest = config.HiddenSize;
            var bytes = TierBytes.Zero;
            foreach (var layer in layers)
            {
                bytes += layer.Bytes;
                if (layer.Layer.BlockIndex is not null && config.HiddenSize > 0)
                {
                    foreach (var w in layer.Weights.Where(w => w.Spec.Rank >= 2))
                        widest = Math.Max(widest, w.Spec.ElementCount / config.HiddenSize);
                }
            }

            int window = policy.Overlap ? 1 + WeightLookaheadOf(policy, computesOnCpu, prefetchSteps) : 1;
            return new WeightSummary(bytes, StreamedBytes(layers, computeDtypeBytes, window, computesOnCpu), widest);
        }

        /// <summary>
        /// The GPU-tier bytes of weights homed elsewhere (or compressed) while they are loaded for a compute: the layers in
        /// flight at once (<paramref name="window"/>) are one, or with overlap the computed one and the
        /// <see cref="WeightLookaheadOf"/> after it (the last and the first are neighbours across tokens). Plain weights
        /// arrive in the compute dtype (an embedding table in its stored one, <see cref="LayerKinds.GathersWeightRows"/>)
        /// in buffers reused across loads, one pool per shape and dtype: it holds, per key, the most buffers of it any
        /// window of layers in flight loads. On the CPU a disk weight stored in another dtype than the compute's is read
        /// into a staging buffer of its own dtype, from the same pool, which its compute converts from
        /// (<c>TierCopy.CopyAs</c>): counted per window as well. Compressed weights arrive compressed, in fresh buffers:
        /// the largest layer's, times the layers in flight.
        /// </summary>
        private static long StreamedBytes(IReadOnlyList<LayerPlacement> layers, int computeDtypeBytes, int window, bool computesOnCpu)
        {
            // Keyed as the engine's pool is: by shape and dtype (here its bytes per buffer).
            var pooled = new Dictionary<(string Shape, long Bytes), long>();
            long compressed = 0;
            for (int j = 0; j < layers.Count; j++)
            {
                var counts = new Dictionary<(string Shape, long Bytes), long>();
                void Count(string shape, long bytes) => counts[(shape, bytes)] = counts.GetValueOrDefault((shape, bytes)) + 1;
                for (int n = 0; n < window; n++)
                {
                    var layer = layers[(j + n) % layers.Count];
                    bool gathersRows = layer.Layer.Kind.GathersWeightRows();
                    foreach (var w in layer.Weights.Where(w => w.Home != TierKind.Gpu && !w.Compressed))
                    {
                        var shape = string.Join("x", w.Spec.Shape);
                        long computeBytes = w.Spec.ElementCount * computeDtypeBytes;
                        Count(shape, gathersRows ? w.Bytes : computeBytes);
                        if (computesOnCpu && w.Home == TierKind.Disk && !gathersRows && w.Bytes != computeBytes)
                            Count(shape, w.Bytes);
                    }
                }

                foreach (var (key, held) in counts)
                {
                    if (held > pooled.GetValueOrDefault(key))
                        pooled[key] = held;
                }

                compressed = Math.Max(compressed, layers[j].Weights.Where(w => w.Compressed).Sum(w => w.Spec.Bytes));
            }

            return TierNeed.Sum(TierNeed.Sum(pooled.Select(p => TierNeed.Product(p.Value, p.Key.Bytes)).ToArray()), TierNeed.Product(compressed, window));
        }
    }
}
