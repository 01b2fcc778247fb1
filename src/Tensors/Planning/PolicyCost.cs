using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Planning;

/// <summary>What bounds a phase's throughput: one link, or the compute, alone; or the compute beside the disk's reads.</summary>
/// <param name="Phase">"prefill" or "decode".</param>
/// <param name="Name">"compute", "cpu->gpu", "gpu->cpu", "disk->cpu", "cpu->disk" or <see cref="CostTerms.ComputeBesideDiskReads"/>.</param>
/// <param name="TokensPerSecond">The phase's throughput if this were all it did (infinite where it does nothing).</param>
public sealed record ThroughputBound(string Phase, string Name, double SecondsPerStep, double TokensPerSecond)
{
    /// <summary>A link to or from the disk tier ("disk->cpu", "cpu->disk").</summary>
    public bool IsDiskLink => Name is "disk->cpu" or "cpu->disk";
}

/// <summary>The cost model's prediction of a run and each of its bounds.</summary>
public sealed record RunPrediction(PlanEvaluation Evaluation, IReadOnlyList<ThroughputBound> Bounds)
{
    /// <summary>The tightest bound of a phase.</summary>
    public ThroughputBound Tightest(string phase) => Bounds.Where(b => b.Phase == phase).MinBy(b => b.TokensPerSecond)!;

    /// <summary>
    /// True when the decode is predicted at least as fast with one of <paramref name="cores"/> cores taken from the compute
    /// and left to the disk tier's reads: then the compute bound scaled to <c>cores - 1</c> cores (linearly, which
    /// understates what fewer threads keep) and the disk's read bound alone; with every core the compute beside the disk's
    /// reads (where the bounds have it) and the disk's read bound at <paramref name="diskShareWhileComputing"/> of its rate
    /// (<see cref="HardwareProfile.DiskShareWhileComputing"/>; 1 where unknown). False without a disk link or with fewer
    /// than 2 cores. On the 2-core VM, OPT-1.3B float32 from disk at 4 x 1 decoded 9.3 token/s on 1 thread against 7.1 on
    /// 2, its disk reading 6.5 against 5.0 GB/s, where the compute's bound on 1 thread (11.5) only just missed the disk's
    /// (11.5) and the compute alone decided.
    /// </summary>
    public bool DecodeGainsFromACoreLeftToTheDisk(int cores, double? diskShareWhileComputing = null)
    {
        if (cores < 2) return false;
        var decode = Bounds.Where(b => b.Phase == "decode").ToList();
        var disk = decode.Where(b => b.IsDiskLink).MinBy(b => b.TokensPerSecond);
        if (disk is null) return false;
        var compute = decode.Single(b => b.Name == "compute");
        var beside = decode.FirstOrDefault(b => b.Name.EndsWith(CostTerms.ComputeBesideDiskReads, StringComparison.Ordinal)) ?? compute;
        double everyCore = Math.Min(beside.TokensPerSecond, disk.TokensPerSecond * (diskShareWhileComputing ?? 1));
        double aCoreLess = Math.Min(compute.TokensPerSecond * (cores - 1) / cores, disk.TokensPerSecond);
        return aCoreLess >= everyCore;
    }
}

/// <summary>
/// The cost model at a policy this engine runs: its block, its placement and its engine terms (CPU attention,
/// compression, overlap) from the policy, so bench's bounds, <c>--policy auto</c> and <c>plan</c> read the same terms.
/// </summary>
public static class PolicyCost
{
    /// <summary>Budgets no run reaches: a prediction of a run the engine already admitted.</summary>
    private static readonly PlanBudgets Unbounded = new(1L << 60, 1L << 60, 1L << 60);

    /// <param name="computesOnCpu">The GPU tier's compute runs on the CPU (its memory is the CPU's): the engine may compute
    /// the GPU batches together, reads disk weights straight into the compute's buffers and widens narrower ones in the compute.</param>
    /// <param name="computeDtypeBytes">Bytes of an element of the compute dtype (4: float32; 2: float16, bfloat16).</param>
    /// <param name="prefetchSteps">The pipeline's prefetch steps: how far ahead the weights load (<see cref="PlacementPlan.WeightLookaheadOf"/>).</param>
    public static EngineTerms EngineTermsOf(ModelConfig config, Policy policy, bool computesOnCpu, int computeDtypeBytes, int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(policy);
        return new EngineTerms(policy.CpuCacheCompute, policy.CompressWeight, policy.CompressCache, policy.Overlap, policy.SepLayer)
        {
            WeightGroupSize = policy.CompWeightConfig.GroupSize,
            CacheGroupSize = policy.CompCacheConfig.GroupSize,
            GroupedBatches = PlacementPlan.ComputesBatchesTogether(config, policy, computesOnCpu),
            WeightLookahead = PlacementPlan.WeightLookaheadOf(policy, computesOnCpu, prefetchSteps),
            GpuInCpuMemory = computesOnCpu,
            // The CPU and disk tiers keep a weight in the compute dtype when it is as wide (ModelWeights.OffComputeHomeDtype).
            ComputeWidensWeights = computesOnCpu && computeDtypeBytes > config.DtypeBytes,
            MultipliesStoredUpToRows = computesOnCpu ? LayerMath.MultipliesStoredUpToRows : 0,
        };
    }

    public static PlanBlock BlockOf(Policy policy) => new(policy.GpuBatchSize, policy.NumGpuBatches);

    public static PlanPlacement PlacementOf(Policy policy) => PlanPlacement.FromPercent([.. policy.Percent]);

    /// <summary>
    /// The problem of a run of <paramref name="config"/> under the engine's terms of <paramref name="policy"/>; an emulated
    /// GPU tier (<see cref="PlanBudgets.GpuInCpuMemory"/>) computes on the CPU, where the engine may group the GPU batches.
    /// </summary>
    /// <param name="computeDtypeBytes">Bytes of an element of the compute dtype (4: float32; 2: float16, bfloat16).</param>
    /// <param name="prefetchSteps">The pipeline's prefetch steps.</param>
    public static PlanProblem ProblemOf(ModelConfig config, Policy policy, int promptLen, int genLen, PlanBudgets budgets, HardwareProfile hardware,
        int computeDtypeBytes, int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(budgets);
        return new(ModelShape.Of(config), promptLen, genLen, budgets, hardware)
        {
            Engine = EngineTermsOf(config, policy, budgets.GpuInCpuMemory, computeDtypeBytes, prefetchSteps),
        };
    }

    /// <summary>The prediction and bounds of a run under <paramref name="policy"/> (its memory unchecked).</summary>
    /// <param name="computesOnCpu">The GPU tier's compute runs on the CPU (no CUDA).</param>
    /// <param name="computeDtypeBytes">Bytes of an element of the compute dtype (4: float32; 2: float16, bfloat16).</param>
    /// <param name="prefetchSteps">The pipeline's prefetch steps.</param>
    public static RunPrediction Predict(ModelConfig config, Policy policy, int promptLen, int genLen, HardwareProfile hardware, bool computesOnCpu,
        int computeDtypeBytes, int prefetchSteps = 1)
    {
        var budgets = Unbounded with { GpuInCpuMemory = computesOnCpu };
        var terms = new CostTerms(ProblemOf(config, policy, promptLen, genLen, budgets, hardware, computeDtypeBytes, prefetchSteps), BlockOf(policy));
        var placement = PlacementOf(policy);
        var bounds = terms.StepTimes(placement)
            .Select(t => new ThroughputBound(t.Phase, t.Name, t.SecondsPerStep,
                t.SecondsPerStep > 0 ? terms.Throughput(t.Phase, t.SecondsPerStep) : double.PositiveInfinity))
            .ToList();
        return new RunPrediction(CostModel.Predict(terms, placement), bounds);
    }
}
