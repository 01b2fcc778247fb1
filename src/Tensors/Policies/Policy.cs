namespace FlexGen.Tensors.Policies;

/// <summary>
/// 4-bit group-wise quantization settings, FlexLLMGen's <c>CompressionConfig</c>. Validated at construction and by
/// every <c>with</c>: only what the compression implements can exist (4 bits, asymmetric min/max, even group size).
/// </summary>
public sealed record CompressionConfig
{
    /// <summary>The only bit width FlexLLMGen's (and our) packed format implements.</summary>
    public const int SupportedNumBits = 4;

    public CompressionConfig(int NumBits, int GroupSize, int GroupDim, bool Symmetric, bool Enabled = true)
    {
        this.NumBits = NumBits;
        this.GroupSize = GroupSize;
        this.GroupDim = GroupDim;
        this.Symmetric = Symmetric;
        this.Enabled = Enabled;
    }

    /// <summary>FlexGen's default for weights: 4 bits, groups of 64 along dim 0.</summary>
    public static CompressionConfig DefaultWeight { get; } = new(4, 64, 0, false);

    /// <summary>FlexGen's default for the KV cache: 4 bits, groups of 64 along dim 2.</summary>
    public static CompressionConfig DefaultCache { get; } = new(4, 64, 2, false);

    public int NumBits
    {
        get;
        init => field = value == SupportedNumBits
            ? value
            : throw new PolicyValidationException($"{nameof(CompressionConfig)}.{nameof(NumBits)}", value,
                $"only {SupportedNumBits}-bit group quantization is implemented");
    }

    public int GroupSize
    {
        get;
        init => field = value >= 2 && value % 2 == 0
            ? value
            : throw new PolicyValidationException($"{nameof(CompressionConfig)}.{nameof(GroupSize)}", value,
                "must be even and >= 2 (two 4-bit values are packed per byte)");
    }

    /// <summary>Dimension the groups run along; checked against a tensor's rank where the tensor is known.</summary>
    public int GroupDim
    {
        get;
        init => field = value >= 0
            ? value
            : throw new PolicyValidationException($"{nameof(CompressionConfig)}.{nameof(GroupDim)}", value,
                "must be >= 0");
    }

    public bool Symmetric
    {
        get;
        init => field = !value
            ? value
            : throw new PolicyValidationException($"{nameof(CompressionConfig)}.{nameof(Symmetric)}", value,
                "only asymmetric (min/max) quantization is implemented, as in FlexLLMGen's packed format");
    }

    public bool Enabled { get; init; }

    public void Deconstruct(out int numBits, out int groupSize, out int groupDim, out bool symmetric, out bool enabled)
    {
        numBits = NumBits;
        groupSize = GroupSize;
        groupDim = GroupDim;
        symmetric = Symmetric;
        enabled = Enabled;
    }
}

/// <summary>
/// How weights, KV cache and activations are spread over GPU, CPU and disk, and how the block schedule runs
/// (FlexGen's <c>Policy</c>). Frozen; every init accessor validates, so an invalid policy cannot exist.
/// </summary>
/// <remarks>
/// The rule gpu + cpu &lt;= 100 is checked each time one of a pair is set, against the other's current value
/// (0 until set). In an object initializer that is order-independent. In a <c>with</c> expression that raises one
/// percentage while lowering its partner, lower the partner first, or use <see cref="WithWeightPercent"/>,
/// <see cref="WithCachePercent"/>, <see cref="WithActPercent"/>.
/// </remarks>
public sealed record Policy
{
    /// <summary>Rounding slack for gpu + cpu &lt;= 100 (70.2 + 29.8 is 100.00000000000001 in doubles).</summary>
    public const double PercentTolerance = 1e-9;

    /// <summary>FlexGen's <c>--percent</c> default: everything on the GPU.</summary>
    public static IReadOnlyList<double> AllGpuPercent { get; } = [100, 0, 100, 0, 100, 0];

    public required int GpuBatchSize
    {
        get;
        init => field = value >= 1 ? value : throw Invalid(nameof(GpuBatchSize), value, "must be >= 1");
    }

    public required int NumGpuBatches
    {
        get;
        init => field = value >= 1 ? value : throw Invalid(nameof(NumGpuBatches), value, "must be >= 1");
    }

    public required double WGpuPercent
    {
        get;
        init => field = CheckPercent(nameof(WGpuPercent), value, "weights", nameof(WCpuPercent), WCpuPercent);
    }

    public required double WCpuPercent
    {
        get;
        init => field = CheckPercent(nameof(WCpuPercent), value, "weights", nameof(WGpuPercent), WGpuPercent);
    }

    public required double CacheGpuPercent
    {
        get;
        init => field = CheckPercent(nameof(CacheGpuPercent), value, "cache", nameof(CacheCpuPercent), CacheCpuPercent);
    }

    public required double CacheCpuPercent
    {
        get;
        init => field = CheckPercent(nameof(CacheCpuPercent), value, "cache", nameof(CacheGpuPercent), CacheGpuPercent);
    }

    public required double ActGpuPercent
    {
        get;
        init => field = CheckPercent(nameof(ActGpuPercent), value, "activations", nameof(ActCpuPercent), ActCpuPercent);
    }

    public required double ActCpuPercent
    {
        get;
        init => field = CheckPercent(nameof(ActCpuPercent), value, "activations", nameof(ActGpuPercent), ActGpuPercent);
    }

    public bool Overlap { get; init; } = true;
    public bool SepLayer { get; init; } = true;
    public bool PinWeight { get; init; } = true;
    public bool CpuCacheCompute { get; init; }

    /// <summary>Fraction of attention kept (top-k) during decode; 1 = dense. In (0, 1].</summary>
    public double AttnSparsity
    {
        get;
        init => field = double.IsFinite(value) && value > 0 && value <= 1
            ? value
            : throw Invalid(nameof(AttnSparsity), value, "must be in (0, 1] (1 = dense attention)");
    } = 1.0;

    public bool CompressWeight { get; init; }

    public CompressionConfig CompWeightConfig
    {
        get;
        init => field = value ?? throw Invalid(nameof(CompWeightConfig), null, "must not be null");
    } = CompressionConfig.DefaultWeight;

    public bool CompressCache { get; init; }

    public CompressionConfig CompCacheConfig
    {
        get;
        init => field = value ?? throw Invalid(nameof(CompCacheConfig), null, "must not be null");
    } = CompressionConfig.DefaultCache;

    /// <summary>100 - gpu - cpu (rounding noise below <see cref="PercentTolerance"/> reads as 0).</summary>
    public double WDiskPercent => DiskPercent(WGpuPercent, WCpuPercent);

    public double CacheDiskPercent => DiskPercent(CacheGpuPercent, CacheCpuPercent);

    public double ActDiskPercent => DiskPercent(ActGpuPercent, ActCpuPercent);

    /// <summary>Weights, cache or activations homed (partly) on disk: the disk tier is read or written every step.</summary>
    public bool StreamsFromDisk => WDiskPercent > 0 || CacheDiskPercent > 0 || ActDiskPercent > 0;

    /// <summary>The six numbers of FlexGen's <c>--percent</c>: w_gpu w_cpu cache_gpu cache_cpu act_gpu act_cpu.</summary>
    public IReadOnlyList<double> Percent =>
        [WGpuPercent, WCpuPercent, CacheGpuPercent, CacheCpuPercent, ActGpuPercent, ActCpuPercent];

    /// <summary>
    /// A policy from FlexGen's six-number <c>--percent</c> list (w_gpu w_cpu cache_gpu cache_cpu act_gpu act_cpu);
    /// the other settings keep FlexGen's CLI defaults (change them with <c>with</c>).
    /// </summary>
    public static Policy FromPercent(IReadOnlyList<double> percent, int gpuBatchSize, int numGpuBatches)
    {
        if (percent is null || percent.Count != 6)
            throw Invalid(nameof(Percent), percent,
                "must be six numbers: w_gpu w_cpu cache_gpu cache_cpu act_gpu act_cpu");
        return new Policy
        {
            GpuBatchSize = gpuBatchSize,
            NumGpuBatches = numGpuBatches,
            WGpuPercent = percent[0],
            WCpuPercent = percent[1],
            CacheGpuPercent = percent[2],
            CacheCpuPercent = percent[3],
            ActGpuPercent = percent[4],
            ActCpuPercent = percent[5],
        };
    }

    /// <summary>A copy with both weight percentages changed at once.</summary>
    public Policy WithWeightPercent(double gpu, double cpu) =>
        this with { WGpuPercent = 0 } with { WCpuPercent = cpu, WGpuPercent = gpu };

    /// <summary>A copy with both cache percentages changed at once.</summary>
    public Policy WithCachePercent(double gpu, double cpu) =>
        this with { CacheGpuPercent = 0 } with { CacheCpuPercent = cpu, CacheGpuPercent = gpu };

    /// <summary>A copy with both activation percentages changed at once.</summary>
    public Policy WithActPercent(double gpu, double cpu) =>
        this with { ActGpuPercent = 0 } with { ActCpuPercent = cpu, ActGpuPercent = gpu };

    private static double DiskPercent(double gpu, double cpu)
    {
        var disk = 100 - gpu - cpu;
        return Math.Abs(disk) < PercentTolerance ? 0 : disk;
    }

    private static double CheckPercent(string field, double value, string what, string partnerField, double partner)
    {
        if (!double.IsFinite(value) || value < 0 || value > 100)
            throw Invalid(field, value, "a percentage must be finite and in [0, 100]");
        if (value + partner > 100 + PercentTolerance)
            throw Invalid(field, value,
                $"{what} gpu + cpu must be <= 100, but with {partnerField} = " +
                $"{PolicyValidationException.Format(partner)} the sum is {PolicyValidationException.Format(value + partner)}");
        return value;
    }

    private static PolicyValidationException Invalid(string field, object? value, string rule) =>
        new($"{nameof(Policy)}.{field}", value, rule);
}
