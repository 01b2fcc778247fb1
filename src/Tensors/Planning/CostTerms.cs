using static FlexGen.Tensors.Planning.PlacementFraction;

namespace FlexGen.Tensors.Planning;

/// <summary>One way a phase's time per layer is bounded below: a link (or chain of links) or the compute.</summary>
/// <param name="Name">What bounds it, e.g. "cpu->gpu + disk->cpu".</param>
/// <param name="Seconds">Its seconds per layer, linear in the placement.</param>
public sealed record PhaseBound(string Name, LinearTerm Seconds);

/// <summary>A tier's peak memory in a phase: the homes of weights, cache and hidden states plus the working buffers.</summary>
public sealed record TierPeak(LinearTerm Home, LinearTerm Working)
{
    public LinearTerm Bytes => Home + Working;
}

/// <summary>
/// FlexLLMGen's cost model (experimental/cost_model.py) for one block, term by term, as linear functions of the
/// placement: the per-layer time of each link and of the compute in prefill and decode, how they overlap into a
/// phase's time, and the peak memory of each tier. Sizes are bytes of float16 (2 per element), times seconds per
/// layer. The exact port: nothing its model leaves out (CPU attention delegation, compression, grouped KV heads) is here.
/// </summary>
public sealed class CostTerms
{
    public CostTerms(PlanProblem problem, PlanBlock block)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(block);
        Problem = problem;
        Block = block;
        var hw = problem.Hardware;
        double s = problem.PromptLen, n = problem.GenLen, l = problem.Model.Layers;
        double h1 = problem.Model.HiddenSize, h2 = problem.Model.FfnSize, nh = problem.Model.Heads;
        double bls = block.BlockSize, gbs = block.GpuBatchSize;

        // A layer's weights: attention 4 h1^2 and MLP 2 h1 h2 parameters (no biases), float16.
        double wi = LayerWeightBytes;
        // The decode step reads on average half the generated tokens' cache besides the prompt's.
        double decodeSeq = s + n / 2;

        // ---- prefill: loads (cpu->gpu, then disk->cpu) and stores (gpu->cpu, then cpu->disk) overlap the compute
        CtogPrefill = (1 / hw.CtogBdw) * (Of(wi, WeightsCpu, WeightsDisk) + Of(2 * s * h1 * bls, HiddenCpu, HiddenDisk));
        GtocPrefill = (1 / hw.GtocBdwCache) * Of(4 * (s + 1) * h1 * bls, CacheCpu, CacheDisk)
                      + (1 / hw.GtocBdwHidden) * Of(2 * s * h1 * bls, HiddenCpu, HiddenDisk);
        DtocPrefill = (1 / hw.DtocBdw) * (Of(wi, WeightsDisk) + Of(2 * s * h1 * bls, HiddenDisk));
        CtodPrefill = (1 / hw.CtodBdwCacheP) * Of(4 * bls * (s + 1) * h1, CacheDisk)
                      + (1 / hw.CtodBdwHiddenP) * Of(2 * s * h1 * bls, HiddenDisk);
        ComputePrefill = LinearTerm.Of(bls * (8 * s * h1 * h1 + 4 * s * h1 * h2) / hw.MmFlopsP
                                       + 4 * bls * s * s * h1 / hw.BmmFlopsP);
        PrefillBounds =
        [
            new("cpu->gpu + disk->cpu", CtogPrefill + DtocPrefill),
            new("gpu->cpu + cpu->disk", GtocPrefill + CtodPrefill),
            new("gpu compute", ComputePrefill),
        ];

        // ---- decode: the cpu->gpu load runs before everything else of the step
        CtogDecode = (1 / hw.CtogBdw) * (Of(wi, WeightsCpu, WeightsDisk) + Of(2 * h1 * bls, HiddenCpu, HiddenDisk));
        GtocDecode = (1 / hw.GtocBdwHidden) * Of(2 * h1 * bls, HiddenCpu, HiddenDisk);
        // FlexLLMGen reads weights from disk at 95% of the disk's bandwidth in decode.
        DtocDecode = (1 / hw.DtocBdw) * (Of(4 * bls * decodeSeq * h1, CacheDisk) + Of(2 * h1 * bls, HiddenDisk))
                     + (1 / (hw.DtocBdw * 0.95)) * Of(wi, WeightsDisk);
        CtodDecode = (1 / hw.CtodBdwG) * (Of(4 * bls * h1, CacheDisk) + Of(2 * h1 * bls, HiddenDisk));
        CpuAttentionFlops = EffectiveCpuFlops(hw, gbs, h1);
        ComputeDecode = LinearTerm.Of(bls * (8 * h1 * h1 + 4 * h1 * h2) / hw.MmFlopsG)
                        + (1 / hw.BmmFlopsG) * Of(4 * bls * decodeSeq * h1, CacheGpu)
                        + (1 / CpuAttentionFlops) * Of(4 * bls * decodeSeq * h1, CacheCpu, CacheDisk);
        DecodeBounds =
        [
            new("cpu->gpu + gpu->cpu", CtogDecode + GtocDecode),
            new("cpu->gpu + disk->cpu", CtogDecode + DtocDecode),
            new("cpu->gpu + cpu->disk", CtogDecode + CtodDecode),
            new("cpu->gpu + compute", CtogDecode + ComputeDecode),
        ];

        // ---- peak memory (FlexLLMGen's gpu_home / gpu_w, cpu_home / cpu_w, nvme_peak)
        double prefillIntermediates = 8 * gbs * s * h1            // q, k, v
                                      + gbs * (2 * s * h1 + 2 * nh * s * s) // attention scores
                                      + gbs * (2 * s * h1)
                                      + 4 * gbs * s * h1
                                      + 2 * gbs * s * h2            // MLP inner activations
                                      + 2 * gbs * s * h1;
        GpuPrefill = new TierPeak(
            Of(wi * l, WeightsGpu) + Of(2 * s * h1 * bls, HiddenGpu) + Of(4 * (s + n) * h1 * bls * l, CacheGpu),
            // two layers' weights in flight (the one computed and the one prefetched)
            LinearTerm.Of(2 * wi) + Of(-2 * wi, WeightsGpu) + LinearTerm.Of(2 * s * h1 * gbs) + Of(-2 * s * h1 * gbs, HiddenGpu)
            + prefillIntermediates);
        var decodeIntermediates = LinearTerm.Of(8 * gbs * h1 + 4 * gbs * h1 + 2 * gbs * h2 + 2 * gbs * h1)
                                  + Of(gbs * (2 * h1 + 2 * (s + n) * h1 + 2 * nh * (s + n)), CacheGpu)
                                  + Of(gbs * (2 * (s + n) * h1 + 2 * h1), CacheGpu);
        GpuDecode = new TierPeak(
            Of(wi * l, WeightsGpu) + Of(2 * h1 * bls, HiddenGpu) + Of(4 * (s + n) * h1 * bls * l, CacheGpu),
            LinearTerm.Of(2 * wi) + Of(-2 * wi, WeightsGpu) + LinearTerm.Of(2 * h1 * gbs) + Of(-2 * h1 * gbs, HiddenGpu)
            + Of(2 * 2 * gbs * (s + n) * h1, CacheGpu)
            + decodeIntermediates);
        CpuPrefill = new TierPeak(
            Of(wi * l, WeightsCpu) + Of(2 * s * h1 * bls, HiddenCpu) + Of(4 * s * h1 * bls * l, CacheCpu),
            LinearTerm.Of(wi) + Of(-wi, WeightsGpu) + LinearTerm.Of(2 * s * h1 * gbs) + Of(-2 * s * h1 * gbs, HiddenGpu));
        CpuDecode = new TierPeak(
            Of(wi * l, WeightsCpu) + Of(2 * h1 * bls, HiddenCpu) + Of(4 * (s + n) * h1 * bls * l, CacheCpu),
            Of(wi, WeightsDisk) + Of(4 * h1 * gbs, HiddenDisk) + Of(8 * (s + n) * h1 * gbs, CacheDisk)
            + LinearTerm.Of(2 * nh * (s + n) * gbs + 2 * h1 * gbs));
        Disk = new TierPeak(
            Of(wi * l, WeightsDisk) + Of(2 * s * h1 * bls, HiddenDisk) + Of(4 * (s + n) * h1 * bls * l, CacheDisk),
            LinearTerm.Zero);
    }

    public PlanProblem Problem { get; }

    public PlanBlock Block { get; }

    /// <summary>FlexLLMGen's <c>wi</c>: 8 h1^2 + 4 h1 h2 bytes.</summary>
    public double LayerWeightBytes => 8.0 * Problem.Model.HiddenSize * Problem.Model.HiddenSize
                                      + 4.0 * Problem.Model.HiddenSize * Problem.Model.FfnSize;

    public LinearTerm CtogPrefill { get; }
    public LinearTerm GtocPrefill { get; }
    public LinearTerm DtocPrefill { get; }
    public LinearTerm CtodPrefill { get; }
    public LinearTerm ComputePrefill { get; }

    public LinearTerm CtogDecode { get; }
    public LinearTerm GtocDecode { get; }
    public LinearTerm DtocDecode { get; }
    public LinearTerm CtodDecode { get; }
    public LinearTerm ComputeDecode { get; }

    /// <summary>The CPU's attention rate for this GPU batch size and hidden width (FlexLLMGen's cpu_flops_real).</summary>
    public double CpuAttentionFlops { get; }

    /// <summary>Tpre = max of these (per layer).</summary>
    public IReadOnlyList<PhaseBound> PrefillBounds { get; }

    /// <summary>Tgen = max of these (per layer and token).</summary>
    public IReadOnlyList<PhaseBound> DecodeBounds { get; }

    public TierPeak GpuPrefill { get; }
    public TierPeak GpuDecode { get; }
    public TierPeak CpuPrefill { get; }
    public TierPeak CpuDecode { get; }
    public TierPeak Disk { get; }

    /// <summary>Every memory constraint: a tier's peak in a phase and the (alpha-scaled) budget it must fit.</summary>
    public IEnumerable<(string Name, TierPeak Peak, double BudgetBytes)> MemoryLimits()
    {
        var budgets = Problem.Budgets;
        double alpha = Problem.Alpha;
        yield return ("gpu prefill", GpuPrefill, budgets.GpuBytes * alpha);
        yield return ("gpu decode", GpuDecode, budgets.GpuBytes * alpha);
        yield return ("cpu prefill", CpuPrefill, budgets.CpuBytes * alpha);
        yield return ("cpu decode", CpuDecode, budgets.CpuBytes * alpha);
        yield return ("disk", Disk, budgets.DiskBytes * alpha);
    }

    /// <summary>Layer steps of the whole generation: the objective is (l Tpre + (n - 1) l Tgen) / bls.</summary>
    public double PrefillSteps => Problem.Model.Layers;

    public double DecodeSteps => (double)(Problem.GenLen - 1) * Problem.Model.Layers;

    /// <summary>
    /// FlexLLMGen's cpu_flops_real: the CPU's rate falls for small GPU batches and narrow models,
    /// cpu_flops * max(0.1, 1 + c1 * a * b - c2 * a - c3 * b) with a = max(0, log2(64 / gbs)), b = max(0, log2(4096 / h1)).
    /// </summary>
    public static double EffectiveCpuFlops(HardwareProfile hardware, double gpuBatchSize, double hiddenSize)
    {
        ArgumentNullException.ThrowIfNull(hardware);
        double a = Math.Max(0, Math.Log2(64 / gpuBatchSize));
        double b = Math.Max(0, Math.Log2(4096 / hiddenSize));
        return hardware.CpuFlops * Math.Max(0.1, 1 + hardware.C1 * (a * b) - hardware.C2 * a - hardware.C3 * b);
    }

    private static LinearTerm Of(double coefficient, params PlacementFraction[] fractions) => LinearTerm.Of(coefficient, fractions);
}
