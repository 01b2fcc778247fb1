using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Planning;

/// <summary>
/// The model as the cost model sees it: FlexLLMGen's <c>l</c> (blocks), <c>h1</c> (hidden), <c>h2</c> (MLP width) and
/// <c>nh</c> (heads).
/// </summary>
public sealed record ModelShape(int Layers, int HiddenSize, int FfnSize, int Heads)
{
    /// <summary>The shape of any family's model, through the seam.</summary>
    public static ModelShape Of(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new ModelShape(config.NumBlocks, config.HiddenSize, config.FfnSize, config.NumHeads);
    }
}

/// <summary>The budgets the placement must fit, in bytes, before the alpha relaxation.</summary>
public sealed record PlanBudgets(long GpuBytes, long CpuBytes, long DiskBytes);

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
