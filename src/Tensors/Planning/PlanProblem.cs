using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Planning;

/// <summary>
/// The model as the cost model sees it: FlexLLMGen's <c>l</c> (blocks), <c>h1</c> (hidden), <c>h2</c> (MLP width) and
/// <c>nh</c> (heads), and the geometry its formulas fix for OPT and a family may change: KV heads (grouped-query
/// attention), head width, the matrix elements of a block's attention and MLP (Llama's MLP has three matrices) and of
/// the output head. The defaults are OPT's, so a shape of the four numbers alone is FlexLLMGen's model.
/// </summary>
public sealed record ModelShape(int Layers, int HiddenSize, int FfnSize, int Heads)
{
    /// <summary>Key/value heads (fewer than <see cref="Heads"/> with grouped-query attention).</summary>
    public int KvHeads { get; init; } = Heads;

    public int HeadDim { get; init; } = HiddenSize / Heads;

    /// <summary>Matrix elements of a block's attention: OPT's q, k, v and out, 4 h1^2.</summary>
    public long AttentionWeightElements { get; init; } = 4L * HiddenSize * HiddenSize;

    /// <summary>Matrix elements of a block's MLP: OPT's two, 2 h1 h2.</summary>
    public long MlpWeightElements { get; init; } = 2L * HiddenSize * FfnSize;

    /// <summary>Matrix elements of the output head (vocabulary x hidden); FlexLLMGen's model leaves it out.</summary>
    public long HeadWeightElements { get; init; }

    /// <summary>Width of the queries and of attention's FLOPs: heads x head_dim (h1 for OPT).</summary>
    public long AttentionWidth => (long)Heads * HeadDim;

    /// <summary>Width of the cached keys (and values): kv_heads x head_dim.</summary>
    public long KvWidth => (long)KvHeads * HeadDim;

    /// <summary>The shape of any family's model, through the seam: element counts from its weight specs (matrices only).</summary>
    public static ModelShape Of(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var layers = config.WithBlocks(1).Layers(sepLayer: true);
        long Matrices(LayerKind kind) => layers.Single(l => l.Kind == kind).Weights.Where(w => w.Rank >= 2).Sum(w => w.ElementCount);
        return new ModelShape(config.NumBlocks, config.HiddenSize, config.FfnSize, config.NumHeads)
        {
            KvHeads = config.KvHeads,
            HeadDim = config.HeadDim,
            AttentionWeightElements = Matrices(LayerKind.Attention),
            MlpWeightElements = Matrices(LayerKind.Mlp),
            HeadWeightElements = Matrices(LayerKind.OutputEmbedding),
        };
    }
}

/// <summary>The budgets the placement must fit, in bytes, before the alpha relaxation.</summary>
public sealed record PlanBudgets(long GpuBytes, long CpuBytes, long DiskBytes)
{
    /// <summary>
    /// The GPU tier is emulated in CPU memory (no CUDA): its peak and the CPU's share <see cref="CpuBytes"/> as well as
    /// each fitting its own budget. Beyond FlexLLMGen's model (it has a real GPU).
    /// </summary>
    public bool GpuInCpuMemory { get; init; }
}

/// <summary>
/// What the planner is asked: a model, a workload of <paramref name="PromptLen"/> (FlexLLMGen's <c>s</c>) and
/// <paramref name="GenLen"/> (<c>n</c>) tokens, the budgets and the hardware. <paramref name="Alpha"/> scales the three
/// budgets as FlexLLMGen's alpha_g, alpha_c and alpha_n do: below 1 leaves room for what the memory terms miss,
/// above 1 admits a policy whose estimate is known to run high.
/// </summary>
public sealed record PlanProblem(ModelShape Model, int PromptLen, int GenLen, PlanBudgets Budgets, HardwareProfile Hardware, double Alpha = PlanProblem.DefaultAlpha)
{
    /// <summary>FlexLLMGen's alpha_g = alpha_c = alpha_n.</summary>
    public const double DefaultAlpha = 0.8;

    /// <summary>The terms beyond FlexLLMGen's model this engine's run has; null: FlexLLMGen's model exactly.</summary>
    public EngineTerms? Engine { get; init; }
}

/// <summary>
/// What this engine's run does that FlexLLMGen's cost model leaves out, as explicit terms (<see cref="CostTerms"/>):
/// where decode attention over the cache off the GPU runs, 4-bit compression of weights and cache, whether transfers
/// overlap the compute, and the output head. With these, the model's geometry (<see cref="ModelShape"/>) counts too;
/// without (<see cref="PlanProblem.Engine"/> null) the terms are FlexLLMGen's.
/// </summary>
/// <param name="CpuCacheCompute">Decode attention over the cache homed on CPU and disk runs on the CPU at cpu_flops,
/// the queries, keys and values of those rows go to the CPU and the attention output back; false: that cache goes to
/// the GPU every step and the GPU attends it. (FlexLLMGen's model computes it on the CPU but moves nothing for it.)</param>
/// <param name="CompressWeight">Weights stored and moved 4-bit (<see cref="CompressionGroupSize"/>), dequantized at each use.</param>
/// <param name="CompressCache">The KV cache stored and moved 4-bit, quantized as it is stored and dequantized as it is read.</param>
/// <param name="Overlap">Transfers run beside the compute (a phase takes the longest of its bounds); false: one after another (their sum).</param>
/// <param name="SepLayer">Attention and MLP run as two layer tasks (one with false): the tasks the profile's task_s is paid for.</param>
public sealed record EngineTerms(bool CpuCacheCompute, bool CompressWeight = false, bool CompressCache = false, bool Overlap = true, bool SepLayer = true)
{
    /// <summary>Elements per quantization group of the weights (FlexLLMGen's default, 64).</summary>
    public int WeightGroupSize { get; init; } = 64;

    /// <summary>
    /// The GPU batches of a layer compute together (the engine's grouped compute on the CPU, decided by
    /// <c>PlacementPlan.ComputesBatchesTogether</c>): one matmul over all the block's rows, the layer's tasks paid once,
    /// every batch's working activations held at once. It needs the whole cache on the GPU tier, so the planner's program
    /// holds it there.
    /// </summary>
    public bool GroupedBatches { get; init; }

    /// <summary>Elements per quantization group of the cache (FlexLLMGen's default, 64).</summary>
    public int CacheGroupSize { get; init; } = 64;

    /// <summary>
    /// The GPU tier is CPU memory (no CUDA): a weight homed on the disk is read straight into its compute buffer, with no
    /// cpu->gpu hop after the disk's (FlexLLMGen's model sends it through the CPU).
    /// </summary>
    public bool GpuInCpuMemory { get; init; }

    /// <summary>
    /// With <see cref="GpuInCpuMemory"/>: plain weights homed on the CPU and disk are kept narrower than the compute dtype
    /// (float16 under float32) and the compute widens them right before its matmuls, on its own threads, at ctog_bdw:
    /// compute time, not a link beside it. (<see cref="CompressWeight"/>: they travel compressed instead.)
    /// </summary>
    public bool ComputeWidensWeights { get; init; }

    /// <summary>
    /// With <see cref="ComputeWidensWeights"/>: the most rows of a compute at which it multiplies such a weight as stored
    /// instead (<c>LayerMath.MultipliesAsStored</c>: decode at small GPU batches), so that phase widens nothing; 0 where
    /// it never does.
    /// </summary>
    public int MultipliesStoredUpToRows { get; init; }

    /// <summary>
    /// How many layers ahead of the compute the weights load (<c>PlacementPlan.WeightLookaheadOf</c>): FlexGen's 1, or 2
    /// with overlap when the compute runs on the CPU, or more with the pipeline's prefetch steps. It sets how many
    /// layers' weights the GPU tier holds at once.
    /// </summary>
    public int WeightLookahead { get; init; } = 1;

    /// <summary>
    /// A layer's (FlexLLMGen's wi, a whole block's) weights held on the GPU tier at once: FlexLLMGen's 2 (the one
    /// computed and the one prefetched). Without sep_layer an engine layer is a block, so 1 + <see cref="WeightLookahead"/>
    /// of them. With sep_layer an engine layer is an attention (a third of a block) or an MLP (two thirds): 1 + 2 of
    /// them hold at most 5/3 of a block, within FlexLLMGen's 2; a longer lookahead (more prefetch steps) more.
    /// </summary>
    public double WeightLayersInFlight => SepLayer ? Math.Max(2, SepLayersInBlocks(1 + WeightLookahead)) : 1 + WeightLookahead;

    /// <summary>The most blocks <paramref name="layers"/> consecutive engine layers of alternating thirds (attention) and two thirds (MLP) hold.</summary>
    private static double SepLayersInBlocks(int layers) => ((2 * ((layers + 1) / 2)) + (layers / 2)) / 3.0;

    /// <summary>
    /// Bytes of the 4-bit layout per byte of float16: per group, group/2 bytes of packed data and a float16 (scale, min)
    /// pair (the layout of <c>CompressedLayout</c>): 0.28 for groups of 64.
    /// </summary>
    public static double CompressedFraction(int groupSize) => (groupSize / 2.0 + 4) / (2.0 * groupSize);
}

/// <summary>A block: <see cref="NumGpuBatches"/> GPU batches of <see cref="GpuBatchSize"/> sequences (FlexLLMGen's gbs and bls / gbs).</summary>
public sealed record PlanBlock
{
    public PlanBlock(int gpuBatchSize, int numGpuBatches)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(gpuBatchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(numGpuBatches, 1);
        GpuBatchSize = gpuBatchSize;
        NumGpuBatches = numGpuBatches;
    }

    public int GpuBatchSize { get; }

    public int NumGpuBatches { get; }

    /// <summary>Sequences per block: FlexLLMGen's <c>bls</c>.</summary>
    public long BlockSize => (long)GpuBatchSize * NumGpuBatches;

    public override string ToString() => $"{GpuBatchSize} x {NumGpuBatches}";
}
