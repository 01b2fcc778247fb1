namespace FlexGen.Tensors.Policies;

/// <summary>
/// 4-bit (or other) group-wise quantization settings, FlexLLMGen's <c>CompressionConfig</c>.
/// </summary>
public sealed record CompressionConfig(int NumBits, int GroupSize, int GroupDim, bool Symmetric, bool Enabled = true)
{
    /// <summary>FlexGen's default for weights: 4 bits, groups of 64 along dim 0.</summary>
    public static CompressionConfig DefaultWeight { get; } = new(4, 64, 0, false);

    /// <summary>FlexGen's default for the KV cache: 4 bits, groups of 64 along dim 2.</summary>
    public static CompressionConfig DefaultCache { get; } = new(4, 64, 2, false);
}

/// <summary>
/// How weights, KV cache and activations are spread over GPU, CPU and disk, and how the block
/// schedule runs. Frozen; validated at construction. (Validation: see the foundation issue.)
/// </summary>
public sealed record Policy
{
    public required int GpuBatchSize { get; init; }
    public required int NumGpuBatches { get; init; }
    public required double WGpuPercent { get; init; }
    public required double WCpuPercent { get; init; }
    public required double CacheGpuPercent { get; init; }
    public required double CacheCpuPercent { get; init; }
    public required double ActGpuPercent { get; init; }
    public required double ActCpuPercent { get; init; }
    public bool Overlap { get; init; } = true;
    public bool SepLayer { get; init; } = true;
    public bool PinWeight { get; init; } = true;
    public bool CpuCacheCompute { get; init; }
    public double AttnSparsity { get; init; } = 1.0;
    public bool CompressWeight { get; init; }
    public CompressionConfig CompWeightConfig { get; init; } = CompressionConfig.DefaultWeight;
    public bool CompressCache { get; init; }
    public CompressionConfig CompCacheConfig { get; init; } = CompressionConfig.DefaultCache;

    public double WDiskPercent => 100 - WGpuPercent - WCpuPercent;
    public double CacheDiskPercent => 100 - CacheGpuPercent - CacheCpuPercent;
    public double ActDiskPercent => 100 - ActGpuPercent - ActCpuPercent;
}
