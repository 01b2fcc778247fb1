namespace FlexGen.Tensors.Placement;

using FlexGen.Tensors.Tiers;

/// <summary>
/// The bytes a run needs on one tier: the homes the plan places there (weights, KV cache, hidden states) and the
/// working buffers the compute makes there while it runs (see <see cref="MemoryNeed"/> for the formulas).
/// </summary>
/// <param name="Weights">Weight homes.</param>
/// <param name="Cache">KV cache homes (k and v of every attention layer and GPU batch).</param>
/// <param name="Hidden">The hidden-state home (act home): one (gpu_batch_size, prompt_len, h) float16 tensor per GPU batch.</param>
/// <param name="StreamedWeights">Weights copied to the compute tier for their compute: the reused buffers they land in (per shape, what one layer, or with overlap the computed one and those loading ahead of it, streams), and on the CPU the staging buffers of disk weights stored in another dtype.</param>
/// <param name="LoadedCache">KV cache of a layer and GPU batch copied to where its attention runs (two with overlap).</param>
/// <param name="LoadedHidden">Hidden states of a GPU batch (every GPU batch with grouped compute) copied to the compute tier from their home (two with overlap).</param>
/// <param name="Activations">The compute's intermediates of a GPU batch (every GPU batch with grouped compute): layer input and output, the largest intermediate, the logits.</param>
public readonly record struct TierNeed(long Weights, long Cache, long Hidden, long StreamedWeights, long LoadedCache, long LoadedHidden, long Activations)
{
    /// <summary>Bytes of the homes (what <see cref="PlacementPlan.TotalBytes"/> counts).</summary>
    public long Homes => Sum(Weights, Cache, Hidden);

    /// <summary>Bytes of the working buffers.</summary>
    public long Working => Sum(StreamedWeights, LoadedCache, LoadedHidden, Activations);

    public long Total => Sum(Homes, Working);

    public bool IsZero => Total == 0;

    public static TierNeed operator +(TierNeed a, TierNeed b) => new(
        Sum(a.Weights, b.Weights), Sum(a.Cache, b.Cache), Sum(a.Hidden, b.Hidden), Sum(a.StreamedWeights, b.StreamedWeights),
        Sum(a.LoadedCache, b.LoadedCache), Sum(a.LoadedHidden, b.LoadedHidden), Sum(a.Activations, b.Activations));

    /// <summary>"weights 1,024, KV cache 2,048, ..." (the parts that are not zero; "nothing" when none).</summary>
    public string Breakdown()
    {
        var parts = new (string Name, long Bytes)[]
        {
            ("weights", Weights), ("KV cache", Cache), ("hidden", Hidden), ("streamed weights", StreamedWeights),
            ("loaded cache", LoadedCache), ("loaded hidden", LoadedHidden), ("activations", Activations),
        }.Where(p => p.Bytes != 0).Select(p => $"{p.Name} {p.Bytes:N0}").ToArray();
        return parts.Length == 0 ? "nothing" : string.Join(", ", parts);
    }

    public override string ToString() => $"{Total:N0} bytes ({Breakdown()})";

    /// <summary>Adds without overflowing: a sum past <see cref="long.MaxValue"/> stays there (a need that large is refused anyway).</summary>
    internal static long Sum(params long[] values)
    {
        long total = 0;
        foreach (var v in values)
        {
            total = v > long.MaxValue - total ? long.MaxValue : total + v;
        }

        return total;
    }

    /// <summary>Multiplies without overflowing (saturates at <see cref="long.MaxValue"/>); the factors are not negative.</summary>
    internal static long Product(params long[] factors)
    {
        long product = 1;
        foreach (var f in factors)
        {
            if (f == 0) return 0;
            product = product > long.MaxValue / f ? long.MaxValue : product * f;
        }

        return product;
    }
}

/// <summary>
/// What a run needs on each tier, before anything is allocated: the one number the budget check
/// (<see cref="PlacementPlan.CheckBudgets"/>) and the planner use. With b = gpu_batch_size, n = num_gpu_batches,
/// s = prompt_len, g = gen_len, h = hidden size, V = vocab size, F = the widest block intermediate (the MLP's ffn width:
/// the largest weight of a transformer block over h), H = heads and d = bytes of a compute element:
/// <list type="bullet">
/// <item>homes, on their tiers: weights (the plan's sum per tier), KV cache (2 * attention layers * n tensors of
/// (s + g - 1, b * kv_heads, head_dim), split as the plan splits them), hidden b * n * s * h * 2;</item>
/// <item>streamed weights, on the GPU tier: weights homed off the GPU, in d, in buffers reused across loads (one pool
/// per shape), which hold per shape the most weights of that shape one layer (two neighbouring layers with overlap: the
/// next loads while this one computes) streams; compressed ones: the largest layer's, float16, times 2 with overlap;</item>
/// <item>loaded cache, where attention runs (GPU; CPU for the disk part with cpu_cache_compute): k and v of one layer
/// and GPU batch homed elsewhere, 2 * (s + g - 1) * b * kv_heads * head_dim * 2, times 2 with overlap;</item>
/// <item>loaded hidden, on the GPU tier when the act home is elsewhere: b * s * h * 2, times 2 with overlap;</item>
/// <item>activations, on the GPU tier: d * b * (2 * s * h [a layer's input and output] + max(s * F, H * s * s,
/// H * (s + g - 1)) [the MLP intermediate or the attention scores] + V [the logits]).</item>
/// </list>
/// With grouped compute (<see cref="PlacementPlan.ComputesBatchesTogether"/>) a layer computes all n GPU batches at once:
/// loaded hidden and activations are n times the above (no cache is loaded then: it is all on the GPU tier).
/// Without CUDA the GPU tier is CPU memory: its need counts against the CPU budget too (<see cref="TierBudgets.GpuInCpuMemory"/>).
/// </summary>
public sealed record MemoryNeed(TierNeed Gpu, TierNeed Cpu, TierNeed Disk)
{
    public TierNeed this[TierKind tier] => tier switch
    {
        TierKind.Gpu => Gpu,
        TierKind.Cpu => Cpu,
        TierKind.Disk => Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, null),
    };

    /// <summary>Bytes of the homes per tier.</summary>
    public TierBytes Homes => new(Gpu.Homes, Cpu.Homes, Disk.Homes);

    /// <summary>Bytes of everything per tier.</summary>
    public TierBytes Total => new(Gpu.Total, Cpu.Total, Disk.Total);

    public override string ToString() => $"gpu {Gpu}; cpu {Cpu}; disk {Disk}";
}
