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

/// <summary>One link's (or the compute's) seconds per layer step of a phase under a placement.</summary>
/// <param name="Phase">"prefill" or "decode".</param>
/// <param name="Name">"cpu->gpu", "gpu->cpu", "disk->cpu", "cpu->disk", "compute" or <see cref="CostTerms.ComputeBesideDiskReads"/>.</param>
public sealed record StepTime(string Phase, string Name, double SecondsPerStep);

/// <summary>
/// FlexLLMGen's cost model (experimental/cost_model.py) for one block, term by term, as linear functions of the
/// placement: the per-layer time of each link and of the compute in prefill and decode, how they overlap into a
/// phase's time, and the peak memory of each tier. Sizes are bytes of float16 (2 per element), times seconds per
/// layer. The model's geometry comes from <see cref="ModelShape"/> (FlexLLMGen's formulas for OPT's). With
/// <see cref="PlanProblem.Engine"/> null the terms are FlexLLMGen's exactly; with it, the terms it leaves out are added
/// (<see cref="EngineTerms"/>): where off-GPU cache is attended and what moves for it, 4-bit compression, overlap off,
/// the output head.
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
        var m = problem.Model;
        var engine = problem.Engine;
        double s = problem.PromptLen, n = problem.GenLen, l = m.Layers;
        double h1 = m.HiddenSize, nh = m.Heads;
        double bls = block.BlockSize, gbs = block.GpuBatchSize;
        // Rows one compute runs over and the tasks a layer step pays: a GPU batch's, per GPU batch; grouped, the block's, once.
        bool grouped = engine is { GroupedBatches: true };
        double computeRows = grouped ? bls : gbs;
        double computesPerLayer = grouped ? 1 : block.NumGpuBatches;
        // Attention FLOPs run over every query head; the cache holds the KV heads only (h1 both, for OPT).
        double aw = m.AttentionWidth, kvw = m.KvWidth;

        // A layer's weights, float16 (FlexLLMGen's 8 h1^2 + 4 h1 h2 for OPT); with the engine's terms the output head
        // too, spread over the layers. Compressed, a quarter of that plus the group scales.
        double blockElements = m.AttentionWeightElements + m.MlpWeightElements;
        double headPerLayer = engine is null ? 0 : m.HeadWeightElements / l;
        double wi16 = 2 * (blockElements + headPerLayer);
        double wi = wi16 * (engine is { CompressWeight: true } ? EngineTerms.CompressedFraction(engine.WeightGroupSize) : 1);
        LayerWeightBytes = wi;
        // k and v of one token of one sequence in one layer, as stored.
        double cacheToken = 4 * kvw * (engine is { CompressCache: true } ? EngineTerms.CompressedFraction(engine.CacheGroupSize) : 1);
        // The decode step reads on average half the generated tokens' cache besides the prompt's.
        double decodeSeq = s + n / 2;

        // Streamed weights on the cpu->gpu link: FlexLLMGen's from the CPU and the disk. With the GPU tier in CPU memory a
        // disk weight is read straight into its compute buffer, and a plain weight the compute widens is compute time
        // (compressed ones travel compressed and are dequantized by the compute: Dequantize).
        bool widens = engine is { GpuInCpuMemory: true, ComputeWidensWeights: true, CompressWeight: false };
        var weightsUp = widens ? LinearTerm.Zero
            : engine is { GpuInCpuMemory: true } ? Of(wi, WeightsCpu)
            : Of(wi, WeightsCpu, WeightsDisk);
        var widening = widens ? (1 / hw.CtogBdw) * Of(wi, WeightsCpu, WeightsDisk) : LinearTerm.Zero;
        // Decode's few rows multiply such a weight as stored, widened in registers.
        var decodeWidening = computeRows <= (engine?.MultipliesStoredUpToRows ?? 0) ? LinearTerm.Zero : widening;

        // ---- prefill: loads (cpu->gpu, then disk->cpu) and stores (gpu->cpu, then cpu->disk) overlap the compute
        CtogPrefill = (1 / hw.CtogBdw) * (weightsUp + Of(2 * s * h1 * bls, HiddenCpu, HiddenDisk));
        GtocPrefill = (1 / hw.GtocBdwCache) * Of(cacheToken * (s + 1) * bls, CacheCpu, CacheDisk)
                      + (1 / hw.GtocBdwHidden) * Of(2 * s * h1 * bls, HiddenCpu, HiddenDisk);
        DtocPrefill = (1 / hw.DtocBdw) * (Of(wi, WeightsDisk) + Of(2 * s * h1 * bls, HiddenDisk));
        CtodPrefill = (1 / hw.CtodBdwCacheP) * Of(cacheToken * bls * (s + 1), CacheDisk)
                      + (1 / hw.CtodBdwHiddenP) * Of(2 * s * h1 * bls, HiddenDisk);
        // With the engine's terms the matmul rate is the profile's at the rows of one compute (FlexLLMGen: one per phase);
        // the output head computes the last position only.
        double mmPrefill = engine is null ? hw.MmFlopsP : hw.MatmulFlops(computeRows * s, hw.MmFlopsP);
        double mmDecode = engine is null ? hw.MmFlopsG : hw.MatmulFlops(computeRows, hw.MmFlopsG);
        // The engine's own work per layer task (the profile's task_s): the block's tasks, and the embedding and output
        // tasks of a step spread over the layers.
        double taskSeconds = engine is not null && hw.TaskSeconds is { } perTask
            ? perTask * computesPerLayer * ((engine.SepLayer ? 2 : 1) + 2 / l)
            : 0;
        ComputePrefill = LinearTerm.Of(bls * 2 * s * blockElements / mmPrefill + bls * 2 * headPerLayer / mmDecode
                                       + 4 * bls * s * s * aw / hw.BmmFlopsP + taskSeconds)
                         + widening
                         + Dequantize(engine, hw, wi16, 4 * kvw * (s + 1) * bls);

        // ---- decode: the cpu->gpu load runs before everything else of the step
        CtogDecode = (1 / hw.CtogBdw) * (weightsUp + Of(2 * h1 * bls, HiddenCpu, HiddenDisk));
        GtocDecode = (1 / hw.GtocBdwHidden) * Of(2 * h1 * bls, HiddenCpu, HiddenDisk);
        // FlexLLMGen reads weights from disk at 95% of the disk's bandwidth in decode.
        DtocDecode = (1 / hw.DtocBdw) * (Of(cacheToken * bls * decodeSeq, CacheDisk) + Of(2 * h1 * bls, HiddenDisk))
                     + (1 / (hw.DtocBdw * 0.95)) * Of(wi, WeightsDisk);
        CtodDecode = (1 / hw.CtodBdwG) * (Of(cacheToken * bls, CacheDisk) + Of(2 * h1 * bls, HiddenDisk));
        CpuAttentionFlops = EffectiveCpuFlops(hw, gbs, h1);
        var attentionFlops = 4 * bls * decodeSeq * aw;
        var offGpuAttention = engine is { CpuCacheCompute: false }
            ? (1 / hw.BmmFlopsG) * Of(attentionFlops, CacheCpu, CacheDisk)
            : (1 / CpuAttentionFlops) * Of(attentionFlops, CacheCpu, CacheDisk);
        ComputeDecode = LinearTerm.Of(2 * bls * (blockElements + headPerLayer) / mmDecode + taskSeconds)
                        + (1 / hw.BmmFlopsG) * Of(attentionFlops, CacheGpu)
                        + offGpuAttention
                        + decodeWidening
                        + Dequantize(engine, hw, wi16, 4 * kvw * decodeSeq * bls);
        if (engine is { CpuCacheCompute: true })
        {
            // The CPU attends the rows cached off the GPU: their q, k, v go down, the attention output comes back.
            GtocDecode += (1 / hw.GtocBdwHidden) * Of(2 * (aw + 2 * kvw) * bls, CacheCpu, CacheDisk);
            CtogDecode += (1 / hw.CtogBdw) * Of(2 * aw * bls, CacheCpu, CacheDisk);
        }
        else if (engine is not null)
        {
            // The GPU attends every row: the cache homed off it comes up each step, as stored.
            CtogDecode += (1 / hw.CtogBdw) * Of(cacheToken * bls * decodeSeq, CacheCpu, CacheDisk);
        }

        if (engine is { Overlap: false })
        {
            // Nothing runs beside anything else: a phase takes the sum of its terms.
            PrefillBounds = [new("serial: links + compute", CtogPrefill + DtocPrefill + GtocPrefill + CtodPrefill + ComputePrefill)];
            DecodeBounds = [new("serial: links + compute", CtogDecode + GtocDecode + DtocDecode + CtodDecode + ComputeDecode)];
        }
        else
        {
            PrefillBounds =
            [
                new("cpu->gpu + disk->cpu", CtogPrefill + DtocPrefill),
                new("gpu->cpu + cpu->disk", GtocPrefill + CtodPrefill),
                new("gpu compute", ComputePrefill),
            ];
            DecodeBounds =
            [
                new("cpu->gpu + gpu->cpu", CtogDecode + GtocDecode),
                new("cpu->gpu + disk->cpu", CtogDecode + DtocDecode),
                new("cpu->gpu + cpu->disk", CtogDecode + CtodDecode),
                new("cpu->gpu + compute", CtogDecode + ComputeDecode),
            ];
            // A compute on the CPU keeps only the profile's share of its rate while the disk tier reads beside it
            // (mm_share_dtoc): a step whose disk reads take D and compute C alone takes max(D, C + loss * D).
            if (engine is { GpuInCpuMemory: true } && hw.MatmulLossWhileDiskReads > 0)
            {
                ComputeBesideDiskReadsPrefill = ComputePrefill + hw.MatmulLossWhileDiskReads * DtocPrefill;
                ComputeBesideDiskReadsDecode = ComputeDecode + hw.MatmulLossWhileDiskReads * DtocDecode;
                PrefillBounds = [.. PrefillBounds, new(ComputeBesideDiskReads, ComputeBesideDiskReadsPrefill)];
                DecodeBounds = [.. DecodeBounds, new("cpu->gpu + " + ComputeBesideDiskReads, CtogDecode + ComputeBesideDiskReadsDecode)];
            }
        }

        // ---- peak memory (FlexLLMGen's gpu_home / gpu_w, cpu_home / cpu_w, nvme_peak); grouped, the GPU's working
        // activations and loaded hidden states are every GPU batch's at once (wbs sequences, not gbs).
        double wbs = computeRows;
        double prefillIntermediates = 8 * wbs * s * h1            // q, k, v
                                      + wbs * (2 * s * h1 + 2 * nh * s * s) // attention scores
                                      + wbs * (2 * s * h1)
                                      + 4 * wbs * s * h1
                                      + 2 * wbs * s * m.FfnSize     // MLP inner activations
                                      + 2 * wbs * s * h1;
        // FlexLLMGen's two layers' weights in flight (the one computed and the one prefetched); the engine's lookahead
        // may hold more (EngineTerms.WeightLayersInFlight).
        double inFlight = engine?.WeightLayersInFlight ?? 2;
        GpuPrefill = new TierPeak(
            Of(wi * l, WeightsGpu) + Of(2 * s * h1 * bls, HiddenGpu) + Of(cacheToken * (s + n) * bls * l, CacheGpu),
            LinearTerm.Of(inFlight * wi) + Of(-inFlight * wi, WeightsGpu) + LinearTerm.Of(2 * s * h1 * wbs) + Of(-2 * s * h1 * wbs, HiddenGpu)
            + prefillIntermediates);
        var decodeIntermediates = LinearTerm.Of(8 * wbs * h1 + 4 * wbs * h1 + 2 * wbs * m.FfnSize + 2 * wbs * h1)
                                  + Of(wbs * (2 * h1 + 2 * (s + n) * kvw + 2 * nh * (s + n)), CacheGpu)
                                  + Of(wbs * (2 * (s + n) * kvw + 2 * h1), CacheGpu);
        GpuDecode = new TierPeak(
            Of(wi * l, WeightsGpu) + Of(2 * h1 * bls, HiddenGpu) + Of(cacheToken * (s + n) * bls * l, CacheGpu),
            LinearTerm.Of(inFlight * wi) + Of(-inFlight * wi, WeightsGpu) + LinearTerm.Of(2 * h1 * wbs) + Of(-2 * h1 * wbs, HiddenGpu)
            + Of(2 * 2 * wbs * (s + n) * kvw, CacheGpu)
            + decodeIntermediates);
        CpuPrefill = new TierPeak(
            Of(wi * l, WeightsCpu) + Of(2 * s * h1 * bls, HiddenCpu) + Of(cacheToken * s * bls * l, CacheCpu),
            LinearTerm.Of(wi) + Of(-wi, WeightsGpu) + LinearTerm.Of(2 * s * h1 * gbs) + Of(-2 * s * h1 * gbs, HiddenGpu));
        CpuDecode = new TierPeak(
            Of(wi * l, WeightsCpu) + Of(2 * h1 * bls, HiddenCpu) + Of(cacheToken * (s + n) * bls * l, CacheCpu),
            Of(wi, WeightsDisk) + Of(4 * h1 * gbs, HiddenDisk) + Of(8 * (s + n) * kvw * gbs, CacheDisk)
            + LinearTerm.Of(2 * nh * (s + n) * gbs + 2 * h1 * gbs));
        Disk = new TierPeak(
            Of(wi * l, WeightsDisk) + Of(2 * s * h1 * bls, HiddenDisk) + Of(cacheToken * (s + n) * bls * l, CacheDisk),
            LinearTerm.Zero);
    }

    public PlanProblem Problem { get; }

    public PlanBlock Block { get; }

    /// <summary>FlexLLMGen's <c>wi</c>, a layer's weight bytes as stored: 8 h1^2 + 4 h1 h2 for OPT (with the engine's terms, plus the output head's share, compressed when the weights are).</summary>
    public double LayerWeightBytes { get; }

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

    /// <summary>The name of the compute's bound with the disk tier's reads beside it.</summary>
    public const string ComputeBesideDiskReads = "compute beside disk reads";

    /// <summary>
    /// The compute's seconds of a layer step with the disk tier's reads of that step beside it, at the profile's share
    /// of the compute rate while the disk reads (<see cref="HardwareProfile.MatmulShareWhileDiskReads"/>); null where the
    /// two share nothing: a compute not on the CPU, overlap off (nothing runs beside the compute) or no such share.
    /// </summary>
    public LinearTerm? ComputeBesideDiskReadsPrefill { get; }

    public LinearTerm? ComputeBesideDiskReadsDecode { get; }

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
        if (!budgets.GpuInCpuMemory) yield break;
        // The emulated GPU tier lives in the same memory as the CPU tier.
        yield return ("gpu + cpu prefill", new TierPeak(GpuPrefill.Home + CpuPrefill.Home, GpuPrefill.Working + CpuPrefill.Working), budgets.CpuBytes * alpha);
        yield return ("gpu + cpu decode", new TierPeak(GpuDecode.Home + CpuDecode.Home, GpuDecode.Working + CpuDecode.Working), budgets.CpuBytes * alpha);
    }

    /// <summary>
    /// Each link's and the compute's seconds per layer step of both phases under a placement (0 where nothing moves), and
    /// the compute's beside the disk's reads where those share the CPU and the disk reads (<see cref="ComputeBesideDiskReads"/>).
    /// </summary>
    public IReadOnlyList<StepTime> StepTimes(PlanPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var times = new List<StepTime>();
        foreach (var (phase, ctog, gtoc, dtoc, ctod, compute, beside) in new[]
                 {
                     ("prefill", CtogPrefill, GtocPrefill, DtocPrefill, CtodPrefill, ComputePrefill, ComputeBesideDiskReadsPrefill),
                     ("decode", CtogDecode, GtocDecode, DtocDecode, CtodDecode, ComputeDecode, ComputeBesideDiskReadsDecode),
                 })
        {
            double diskReads = dtoc.Evaluate(placement);
            times.Add(new(phase, "cpu->gpu", ctog.Evaluate(placement)));
            times.Add(new(phase, "gpu->cpu", gtoc.Evaluate(placement)));
            times.Add(new(phase, "disk->cpu", diskReads));
            times.Add(new(phase, "cpu->disk", ctod.Evaluate(placement)));
            times.Add(new(phase, "compute", compute.Evaluate(placement)));
            if (beside is not null && diskReads > 0) times.Add(new(phase, ComputeBesideDiskReads, beside.Evaluate(placement)));
        }

        return times;
    }

    /// <summary>Tokens per second a phase would reach if a step took <paramref name="secondsPerStep"/>: prompt tokens in prefill, generated tokens in decode.</summary>
    public double Throughput(string phase, double secondsPerStep) =>
        (phase == "prefill" ? Block.BlockSize * (double)Problem.PromptLen : Block.BlockSize) / (Problem.Model.Layers * secondsPerStep);

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

    /// <summary>
    /// The (de)quantization a step computes with compression: every weight dequantized at its use, and the cache bytes
    /// the step quantizes or reads (<paramref name="cacheFloat16Bytes"/>); needs the profile's <c>comp_bdw</c>.
    /// </summary>
    private static LinearTerm Dequantize(EngineTerms? engine, HardwareProfile hw, double weightFloat16Bytes, double cacheFloat16Bytes)
    {
        if (engine is not ({ CompressWeight: true } or { CompressCache: true })) return LinearTerm.Zero;
        double rate = hw.CompBdw ?? throw new HardwareProfileException("the hardware profile",
            $"compression needs {HardwareProfile.CompBdwName} (float16 bytes (de)quantized per second); flexgen profile measures it");
        return LinearTerm.Of(((engine.CompressWeight ? weightFloat16Bytes : 0) + (engine.CompressCache ? cacheFloat16Bytes : 0)) / rate);
    }
}
