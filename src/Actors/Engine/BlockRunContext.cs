namespace FlexGen.Actors.Engine;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>What the task handlers of one block share: the backend, the block and its plan, the cache homes, the buffers, the output.</summary>
internal sealed class BlockRunContext(
    TorchPipelineBackend backend, BlockRequest block, TorchBlockPlan plan, BlockCacheHomes cache, BlockBuffers buffers, TokenOutput tokens, StageLink stage, Generator? generator,
    WeightBufferPool weightBuffers)
{
    public TorchPipelineBackend Backend { get; } = backend;

    public BlockRequest Block { get; } = block;

    public TorchBlockPlan Plan { get; } = plan;

    public TaskRouter Router => Plan.Router;

    public Policy Policy => Backend.Policy;

    public BlockCacheHomes Cache { get; } = cache;

    public BlockBuffers Buffers { get; } = buffers;

    public TokenOutput Tokens { get; } = tokens;

    /// <summary>The GPU-tier buffers streamed weights are loaded into, reused across tokens.</summary>
    public WeightBufferPool WeightBuffers { get; } = weightBuffers;

    /// <summary>What the block exchanges with the other stages of a pipeline (unused when the backend holds the whole model).</summary>
    public StageLink Stage { get; } = stage;

    /// <summary>The first layer reads its input from another stage: the hidden state of the stage before.</summary>
    public bool InputFromStage => !Plan.Schedule.Shape.FirstStage;

    /// <summary>The last layer's output goes to the next stage instead of being sampled here.</summary>
    public bool OutputToStage => !Plan.Schedule.Shape.LastStage;

    /// <summary>The sampling generator of the block (null when greedy).</summary>
    public Generator? Generator { get; } = generator;

    public DeviceTier Gpu => Backend.Tiers.Gpu;

    public ComputeSettings GpuCompute => Backend.Settings.Compute;

    public ComputeSettings CpuCompute => Backend.Settings.CpuCompute;

    /// <summary>Rows of one GPU batch (gpu_batch_size).</summary>
    public int BatchRows => Policy.GpuBatchSize;

    /// <summary>Rows of the KV cache's dim 1 per sequence (the model's KV heads).</summary>
    public int KvRowsPerSequence => Backend.KvRowsPerSequence;

    /// <summary>True when decode attention runs (partly) on the CPU compute actor (cpu_cache_compute).</summary>
    public bool CpuAttention => Router.Plan.CpuAttention;

    /// <summary>Cache positions before token i (the prompt and the i - 1 tokens generated before it).</summary>
    public long PastLength(int i) => Block.PromptLen + i - 1;

    /// <summary>Where a part of <paramref name="actor"/> computes: the CPU for cpu-compute, else the GPU tier's device.</summary>
    public Device DeviceOf(PipelineActorKind actor) => actor == PipelineActorKind.CpuCompute ? CPU : Gpu.Device;

    /// <summary>
    /// True when decode attention over <paramref name="segment"/> reads only the value rows at its top-k positions
    /// (attn_sparsity &lt; 1). A compressed value cache is loaded whole instead: its rows sit in quantization groups
    /// that a row gather would have to decompress one by one.
    /// </summary>
    public bool FetchesValueRows(CacheSegmentHome segment) => Policy.AttnSparsity < 1 && segment.Value is not CompressedTensor;
}
