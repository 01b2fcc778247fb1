using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Tests.Policies;

public class FlexGenPolicyJsonTests
{
    private static readonly string FixturePath =
        Path.Combine(AppContext.BaseDirectory, "Fixtures", "opt-tiny", "policies.json");

    [Fact]
    public void Load_should_read_the_ten_fixture_policies_in_file_order()
    {
        var policies = FlexGenPolicyJson.Load(FixturePath);

        Assert.Equal(
            [
                "all_gpu", "all_gpu_no_overlap_joint_layer", "weights_disk_cache_cpu_cpu_compute",
                "weights_split_3way_cache_cpu", "cache_mixed_gpu_cpu_cpu_compute", "act_on_cpu", "compress_weight",
                "compress_cache", "compress_both_offloaded", "sparse_attn_0.5_cache_disk",
            ],
            policies.Keys);
        Assert.All(policies.Values, p => Assert.Equal((4, 2), (p.GpuBatchSize, p.NumGpuBatches)));
    }

    [Fact]
    public void Load_should_carry_every_FlexGen_field()
    {
        var policies = FlexGenPolicyJson.Load(FixturePath);

        var split = policies["weights_split_3way_cache_cpu"];
        Assert.Equal([30d, 30, 0, 100, 100, 0], split.Percent);
        Assert.Equal(40d, split.WDiskPercent);
        Assert.False(split.Overlap);
        Assert.True(split.SepLayer);

        var joint = policies["all_gpu_no_overlap_joint_layer"];
        Assert.False(joint.SepLayer || joint.Overlap);

        var cpuCompute = policies["weights_disk_cache_cpu_cpu_compute"];
        Assert.Equal(100d, cpuCompute.WDiskPercent);
        Assert.True(cpuCompute.CpuCacheCompute);

        var mixed = policies["cache_mixed_gpu_cpu_cpu_compute"];
        Assert.Equal((50d, 50d, 0d), (mixed.CacheGpuPercent, mixed.CacheCpuPercent, mixed.CacheDiskPercent));

        Assert.Equal(100d, policies["act_on_cpu"].ActCpuPercent);

        var both = policies["compress_both_offloaded"];
        Assert.True(both.CompressWeight && both.CompressCache && both.PinWeight);
        Assert.Equal(new CompressionConfig(4, 64, 0, false), both.CompWeightConfig);
        Assert.Equal(new CompressionConfig(4, 64, 2, false), both.CompCacheConfig);
        Assert.Equal(100d, both.WCpuPercent);

        var sparse = policies["sparse_attn_0.5_cache_disk"];
        Assert.Equal(0.5, sparse.AttnSparsity);
        Assert.Equal(100d, sparse.CacheDiskPercent);
    }

    [Fact]
    public void Missing_file_should_be_refused_naming_the_file()
    {
        var path = Path.Combine(Path.GetTempPath(), $"no-such-{Guid.NewGuid():N}.json");
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Load(path));
        Assert.StartsWith(path, ex.Message);
    }

    [Fact]
    public void Invalid_json_should_be_refused_naming_the_source()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse("{ \"a\": ", "p.json"));
        Assert.StartsWith("p.json: not valid JSON", ex.Message);
    }

    [Fact]
    public void Top_level_array_should_be_refused()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse("[]", "p.json"));
        Assert.Contains("object of named policies", ex.Message);
    }

    [Fact]
    public void Missing_percent_should_be_refused_naming_policy_and_key()
    {
        var ex = Assert.Throws<PolicyJsonException>(() =>
            FlexGenPolicyJson.Parse("""{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1 } }""", "p.json"));
        Assert.Equal("p.json: policy 'p1', key 'percent': required key is missing", ex.Message);
        Assert.Equal(("p1", "percent"), (ex.PolicyName, ex.Key));
    }

    [Fact]
    public void Percent_with_five_numbers_should_be_refused()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100] } }""", "p.json"));
        Assert.Contains("six numbers", ex.Message);
        Assert.Equal("percent", ex.Key);
    }

    [Fact]
    public void Invalid_percentage_should_be_refused_with_the_validation_rule()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 10, 100, 0, 100, 0] } }""", "p.json"));
        Assert.Equal("p.json: policy 'p1': Policy.WCpuPercent = 10 is invalid: weights gpu + cpu must be <= 100, " +
            "but with WGpuPercent = 100 the sum is 110.", ex.Message);
        Assert.IsType<PolicyValidationException>(ex.InnerException);
    }

    [Fact]
    public void Fractional_batch_size_should_be_refused()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 2.5, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100, 0] } }""", "p.json"));
        Assert.Equal("gpu_batch_size", ex.Key);
        Assert.Contains("integer", ex.Message);
    }

    [Fact]
    public void Unknown_key_should_be_refused_but_flexllmgen_annotations_skipped()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100, 0], "overlapp": true } }""", "p.json"));
        Assert.Equal("overlapp", ex.Key);

        var ok = FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100, 0], "flexllmgen_note": 1 } }""");
        Assert.True(ok["p1"].Overlap);
    }

    [Fact]
    public void Unsupported_compression_bits_should_be_refused_naming_the_config_key()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """
            { "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100, 0],
                      "comp_cache_config": { "num_bits": 8, "group_size": 64, "group_dim": 2, "symmetric": false } } }
            """, "p.json"));
        Assert.Equal("comp_cache_config", ex.Key);
        Assert.Contains("CompressionConfig.NumBits = 8", ex.Message);
    }

    [Fact]
    public void Non_boolean_flag_should_be_refused()
    {
        var ex = Assert.Throws<PolicyJsonException>(() => FlexGenPolicyJson.Parse(
            """{ "p1": { "gpu_batch_size": 4, "num_gpu_batches": 1, "percent": [100, 0, 100, 0, 100, 0], "sep_layer": 1 } }""", "p.json"));
        Assert.Equal("sep_layer", ex.Key);
        Assert.Contains("true or false", ex.Message);
    }
}
