using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Tests.Policies;

public class PolicyTests
{
    private static Policy Valid() => Policy.FromPercent([30, 30, 0, 100, 100, 0], gpuBatchSize: 4, numGpuBatches: 2);

    [Fact]
    public void FromPercent_should_set_the_six_percentages_and_compute_disk_shares()
    {
        var policy = Policy.FromPercent([30, 20, 50, 25, 0, 100], 32, 4);

        Assert.Equal((32, 4), (policy.GpuBatchSize, policy.NumGpuBatches));
        Assert.Equal((30d, 20d, 50d), (policy.WGpuPercent, policy.WCpuPercent, policy.WDiskPercent));
        Assert.Equal((50d, 25d, 25d), (policy.CacheGpuPercent, policy.CacheCpuPercent, policy.CacheDiskPercent));
        Assert.Equal((0d, 100d, 0d), (policy.ActGpuPercent, policy.ActCpuPercent, policy.ActDiskPercent));
        Assert.Equal([30d, 20, 50, 25, 0, 100], policy.Percent);
        // FlexGen's CLI defaults for everything else.
        Assert.True(policy.Overlap && policy.SepLayer && policy.PinWeight);
        Assert.False(policy.CpuCacheCompute || policy.CompressWeight || policy.CompressCache);
        Assert.Equal(1.0, policy.AttnSparsity);
        Assert.Equal(CompressionConfig.DefaultWeight, policy.CompWeightConfig);
        Assert.Equal(CompressionConfig.DefaultCache, policy.CompCacheConfig);
    }

    [Fact]
    public void Policy_should_be_a_value_with_structural_equality()
    {
        Assert.Equal(Valid(), Valid());
        Assert.NotEqual(Valid(), Valid() with { Overlap = false });
    }

    [Fact]
    public void Disk_share_should_read_zero_when_gpu_and_cpu_sum_to_100_up_to_rounding()
    {
        // 70.2 + 29.8 = 100.00000000000001 in doubles: still a valid split with nothing on disk.
        var policy = Policy.FromPercent([70.2, 29.8, 100, 0, 100, 0], 1, 1);

        Assert.Equal(0d, policy.WDiskPercent);
    }

    [Theory]
    [InlineData(0, -1.0)]
    [InlineData(1, -0.001)]
    [InlineData(2, 100.5)]
    [InlineData(3, 101.0)]
    [InlineData(4, double.NaN)]
    [InlineData(5, double.PositiveInfinity)]
    [InlineData(0, double.NegativeInfinity)]
    public void Percent_outside_0_100_or_not_finite_should_be_refused(int index, double value)
    {
        var percent = new double[] { 0, 0, 0, 0, 0, 0 };
        percent[index] = value;
        string[] fields = ["WGpuPercent", "WCpuPercent", "CacheGpuPercent", "CacheCpuPercent", "ActGpuPercent", "ActCpuPercent"];

        var ex = Assert.Throws<PolicyValidationException>(() => Policy.FromPercent(percent, 1, 1));

        Assert.Equal("Policy." + fields[index], ex.Field);
        Assert.Equal("Policy." + fields[index], ex.ParamName);
        Assert.Equal(value, ex.Value);
        Assert.Contains("[0, 100]", ex.Rule);
    }

    [Theory]
    [InlineData(new double[] { 60, 50, 100, 0, 100, 0 }, "Policy.WCpuPercent", "weights")]
    [InlineData(new double[] { 100, 0, 100, 0.5, 100, 0 }, "Policy.CacheCpuPercent", "cache")]
    [InlineData(new double[] { 100, 0, 100, 0, 70, 31 }, "Policy.ActCpuPercent", "activations")]
    public void Gpu_plus_cpu_over_100_should_be_refused(double[] percent, string field, string what)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Policy.FromPercent(percent, 1, 1));

        Assert.Equal(field, ex.Field);
        Assert.Contains($"{what} gpu + cpu must be <= 100", ex.Rule);
    }

    [Fact]
    public void Gpu_plus_cpu_over_100_should_be_refused_whatever_the_initializer_order()
    {
        var ex = Assert.Throws<PolicyValidationException>(() => new Policy
        {
            GpuBatchSize = 1, NumGpuBatches = 1,
            WCpuPercent = 80, WGpuPercent = 30, // cpu first this time
            CacheGpuPercent = 100, CacheCpuPercent = 0, ActGpuPercent = 100, ActCpuPercent = 0,
        });

        Assert.Equal("Policy.WGpuPercent = 30 is invalid: weights gpu + cpu must be <= 100, but with WCpuPercent = 80 the sum is 110.", ex.Message);
    }

    [Fact]
    public void Message_should_name_field_value_and_rule()
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Valid() with { WGpuPercent = 120 });

        Assert.Equal("Policy.WGpuPercent = 120 is invalid: a percentage must be finite and in [0, 100].", ex.Message);
        Assert.IsAssignableFrom<ArgumentException>(ex);
    }

    [Fact]
    public void With_expression_should_not_bypass_the_pair_rule()
    {
        // Valid(): weights 30 / 30. Raising gpu to 80 while cpu stays 30 is 110.
        var ex = Assert.Throws<PolicyValidationException>(() => Valid() with { WGpuPercent = 80 });
        Assert.Equal("Policy.WGpuPercent", ex.Field);
    }

    [Fact]
    public void WithWeightPercent_should_change_both_weight_percentages_at_once()
    {
        var policy = Valid().WithWeightPercent(80, 20).WithCachePercent(10, 10).WithActPercent(0, 100);

        Assert.Equal([80d, 20, 10, 10, 0, 100], policy.Percent);
        Assert.Equal(80d, policy.CacheDiskPercent);
        Assert.Throws<PolicyValidationException>(() => policy.WithWeightPercent(80, 21));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void GpuBatchSize_below_1_should_be_refused(int value)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Valid() with { GpuBatchSize = value });
        Assert.Equal($"Policy.GpuBatchSize = {value} is invalid: must be >= 1.", ex.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void NumGpuBatches_below_1_should_be_refused(int value)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Policy.FromPercent(Policy.AllGpuPercent, 4, value));
        Assert.Equal($"Policy.NumGpuBatches = {value} is invalid: must be >= 1.", ex.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.5)]
    [InlineData(1.0000001)]
    [InlineData(double.NaN)]
    public void AttnSparsity_outside_0_exclusive_1_inclusive_should_be_refused(double value)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Valid() with { AttnSparsity = value });
        Assert.Equal("Policy.AttnSparsity", ex.Field);
        Assert.Contains("(0, 1]", ex.Rule);
    }

    [Fact]
    public void AttnSparsity_inside_the_range_should_be_kept()
    {
        Assert.Equal(0.5, (Valid() with { AttnSparsity = 0.5 }).AttnSparsity);
        Assert.Equal(1.0, (Valid() with { AttnSparsity = 1.0 }).AttnSparsity);
    }

    [Fact]
    public void Null_compression_configs_should_be_refused()
    {
        Assert.Equal("Policy.CompWeightConfig",
            Assert.Throws<PolicyValidationException>(() => Valid() with { CompWeightConfig = null! }).Field);
        Assert.Equal("Policy.CompCacheConfig",
            Assert.Throws<PolicyValidationException>(() => Valid() with { CompCacheConfig = null! }).Field);
    }

    [Theory]
    [InlineData(5)]
    [InlineData(7)]
    [InlineData(0)]
    public void FromPercent_should_refuse_a_list_that_is_not_six_numbers(int count)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => Policy.FromPercent(new double[count], 1, 1));
        Assert.Equal("Policy.Percent", ex.Field);
        Assert.Contains("six numbers", ex.Rule);
    }
}

public class CompressionConfigTests
{
    [Fact]
    public void Defaults_should_be_FlexGen_4_bit_groups_of_64()
    {
        var (bits, size, dim, symmetric, enabled) = CompressionConfig.DefaultWeight;
        Assert.Equal((4, 64, 0, false, true), (bits, size, dim, symmetric, enabled));
        Assert.Equal(new CompressionConfig(4, 64, 2, false), CompressionConfig.DefaultCache);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(3)]
    [InlineData(0)]
    public void NumBits_other_than_4_should_be_refused(int bits)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => new CompressionConfig(bits, 64, 0, false));
        Assert.Equal($"CompressionConfig.NumBits = {bits} is invalid: only 4-bit group quantization is implemented.", ex.Message);
    }

    [Theory]
    [InlineData(63)]
    [InlineData(1)]
    [InlineData(0)]
    [InlineData(-2)]
    public void GroupSize_odd_or_below_2_should_be_refused(int groupSize)
    {
        var ex = Assert.Throws<PolicyValidationException>(() => new CompressionConfig(4, groupSize, 0, false));
        Assert.Equal("CompressionConfig.GroupSize", ex.Field);
        Assert.Equal(groupSize, ex.Value);
        Assert.Contains("even and >= 2", ex.Rule);
    }

    [Fact]
    public void Negative_GroupDim_should_be_refused()
    {
        var ex = Assert.Throws<PolicyValidationException>(() => new CompressionConfig(4, 64, -1, false));
        Assert.Equal("CompressionConfig.GroupDim = -1 is invalid: must be >= 0.", ex.Message);
    }

    [Fact]
    public void Symmetric_quantization_should_be_refused()
    {
        var ex = Assert.Throws<PolicyValidationException>(() => new CompressionConfig(4, 64, 0, true));
        Assert.Equal("CompressionConfig.Symmetric", ex.Field);
        Assert.Contains("asymmetric", ex.Rule);
    }

    [Fact]
    public void With_expression_should_validate_too()
    {
        Assert.Throws<PolicyValidationException>(() => CompressionConfig.DefaultCache with { GroupSize = 33 });
        Assert.Equal(32, (CompressionConfig.DefaultCache with { GroupSize = 32 }).GroupSize);
    }
}
