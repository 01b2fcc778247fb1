namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Placement;
using TorchSharp;

/// <summary>
/// The mixed tier (FlexGen's <c>TorchMixedDevice</c>): a tensor split along dimension 1 into a GPU, a CPU and a disk
/// segment. Segment lengths come from the tier's percentages, each rounded down to a multiple of
/// <see cref="Granularity"/> (kv_heads for the KV cache) with the remainder on disk, or are given per allocation.
/// </summary>
public sealed class MixedTier : MemoryTier
{
    /// <summary>The dimension tensors are split along.</summary>
    public const int SplitDim = 1;

    public MixedTier(DeviceTier gpu, DeviceTier cpu, DiskTier disk, double gpuPercent, double cpuPercent, int granularity)
        : base("mixed", home: null, long.MaxValue)
    {
        if (gpuPercent < 0 || cpuPercent < 0 || gpuPercent + cpuPercent > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(gpuPercent), $"Mixed tier percentages gpu {gpuPercent} + cpu {cpuPercent} must be in [0, 100].");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(granularity, 1);
        Gpu = gpu;
        Cpu = cpu;
        Disk = disk;
        GpuPercent = gpuPercent;
        CpuPercent = cpuPercent;
        Granularity = granularity;
    }

    public DeviceTier Gpu { get; }

    public DeviceTier Cpu { get; }

    public DiskTier Disk { get; }

    public double GpuPercent { get; }

    public double CpuPercent { get; }

    public int Granularity { get; }

    /// <summary>FlexGen's split of <paramref name="extent"/>, as the placement plan's (<see cref="CachePlacement.SplitSegments"/>).</summary>
    public static (long Gpu, long Cpu, long Disk) SplitLengths(long extent, double gpuPercent, double cpuPercent, int granularity) =>
        CachePlacement.SplitSegments(extent, gpuPercent, cpuPercent, granularity);

    public override MixedTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null)
    {
        CheckSplittable(shape);
        var (gpu, cpu, disk) = SplitLengths(shape[SplitDim], GpuPercent, CpuPercent, Granularity);
        return Allocate(shape, dtype, [gpu, cpu, disk], name);
    }

    /// <summary>
    /// Allocates with explicit GPU, CPU and disk lengths along dimension 1 (summing to its extent);
    /// <paramref name="rowMajorInCpuMemory"/>: segments in CPU memory are row-major cache homes
    /// (<see cref="DeviceTier.AllocateRowMajorCache"/>).
    /// </summary>
    public MixedTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, IReadOnlyList<long> segmentLengths, string? name = null,
        bool rowMajorInCpuMemory = false)
    {
        CheckSplittable(shape);
        name ??= DefaultName(Name);
        if (segmentLengths.Count != 3 || segmentLengths.Any(l => l < 0) || segmentLengths.Sum() != shape[SplitDim])
        {
            throw new ArgumentException($"Mixed tensor '{name}': segment lengths [{string.Join(", ", segmentLengths)}] must be three non-negative numbers summing to dimension {SplitDim} of {TensorShapes.Format(shape.ToArray())}.");
        }

        MemoryTier[] homes = [Gpu, Cpu, Disk];
        string[] suffixes = ["gpu", "cpu", "disk"];
        var segments = new List<TieredTensor>();
        var starts = new List<long>();
        long start = 0;
        try
        {
            for (var s = 0; s < 3; s++)
            {
                if (segmentLengths[s] == 0)
                {
                    continue;
                }

                var segmentShape = shape.ToArray();
                segmentShape[SplitDim] = segmentLengths[s];
                segments.Add(homes[s] is DeviceTier memory
                    ? memory.AllocateCache(segmentShape, dtype, $"{name}.{suffixes[s]}", rowMajorInCpuMemory)
                    : homes[s].Allocate(segmentShape, dtype, $"{name}.{suffixes[s]}"));
                starts.Add(start);
                start += segmentLengths[s];
            }
        }
        catch
        {
            foreach (var segment in segments)
            {
                segment.Dispose();
            }

            throw;
        }

        Accounting.Reserve(0, name);
        return new MixedTensor(this, shape, dtype, name, segments, starts);
    }

    private static void CheckSplittable(ReadOnlySpan<long> shape)
    {
        if (shape.Length <= SplitDim)
        {
            throw new ArgumentException($"The mixed tier splits along dimension {SplitDim}; shape {TensorShapes.Format(shape.ToArray())} has none.", nameof(shape));
        }
    }
}

/// <summary>A tensor of the mixed tier: segments along dimension 1, each a tensor of the GPU, CPU or disk tier.</summary>
public sealed class MixedTensor : TieredTensor
{
    internal MixedTensor(MixedTier tier, ReadOnlySpan<long> shape, torch.ScalarType dtype, string name, IReadOnlyList<TieredTensor> segments, IReadOnlyList<long> starts)
        : base(tier, shape, dtype, name)
    {
        Segments = segments;
        SegmentStarts = starts;
    }

    /// <summary>The non-empty segments in GPU, CPU, disk order; each owned by this tensor.</summary>
    public IReadOnlyList<TieredTensor> Segments { get; }

    /// <summary>Where each segment starts along dimension 1.</summary>
    public IReadOnlyList<long> SegmentStarts { get; }

    /// <summary>Length along dimension 1 of the segment on <paramref name="kind"/> (0 when there is none).</summary>
    public long SegmentLength(TierKind kind) =>
        Segments.Where(s => s.Home == kind).Sum(s => s.Shape[MixedTier.SplitDim]);

    protected override void ReleaseResources()
    {
        foreach (var segment in Segments)
        {
            segment.Dispose();
        }

        base.Tier.Accounting.Release(0);
    }
}
