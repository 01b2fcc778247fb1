using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using ScalarType = TorchSharp.torch.ScalarType;

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
/// <see cref="Shape"/> = (prompt_len + gen_len - 1, gpu_batch_size * kv_heads, head_dim), float16 (FlexGen's), the
/// compute dtype of a CPU that attends it (float32 or bfloat16: see <c>PlacementPlan.KeepsCacheInComputeDtype</c>) or
/// compressed.
/// A whole-tier cache has <see cref="Home"/> set; a mixed one (<see cref="Home"/> null) is split along dim 1 into
/// GPU, CPU and disk segments of <see cref="GpuLength"/>, <see cref="CpuLength"/>, <see cref="DiskLength"/> rows.
/// </summary>
/// <param name="Dtype">The stored dtype before compression: float16, float32 or bfloat16.</param>
public sealed record CachePlacement(
    IReadOnlyList<long> Shape,
    TierKind? Home,
    long GpuLength,
    long CpuLength,
    long DiskLength,
    CompressionConfig? Compression,
    int AttentionLayers,
    int NumGpuBatches,
    TierBytes BytesPerTensor,
    ScalarType Dtype)
{
    public bool IsMixed => Home is null;

    /// <summary>Bytes of a stored element before compression.</summary>
    public int ElementBytes => TensorShapes.ElementSize(Dtype);

    /// <summary>
    /// The cache is kept in the compute dtype for the CPU that attends it (float32 or bfloat16, which its decode attention
    /// reads as stored) rather than FlexGen's float16.
    /// </summary>
    public bool KeptForCpuAttention => Dtype != ScalarType.Float16;

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
