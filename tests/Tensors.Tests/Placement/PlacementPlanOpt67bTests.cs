using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tests.Models;

namespace FlexGen.Tensors.Tests.Placement;

/// <summary>
/// Percent splits on the opt-6.7b preset (h = 4096, h^2 = 16,777,216, 32 heads, head_dim 128, 32 blocks,
/// ffn 4h, vocab V = 50272), 32 x 2 GPU batches, prompt 512, 32 new tokens (FlexGen's benchmark geometry).
/// </summary>
/// <remarks>
/// <code>
/// group totals (elements): SelfAttention 4h^2 + 6h = 67,133,440; Mlp 8h^2 + 7h = 134,246,400;
///   InputEmbed V*h + 2050*h = 205,914,112 + 8,396,800 = 214,310,912; OutputEmbed 2h + V*h = 205,922,304
/// KV cache tensor (512 + 32 - 1, 32 * 32, 128) = (543, 1024, 128): one dim-1 row = 543 * 128 * 2 = 139,008 bytes;
///   k and v x 32 layers x 2 GPU batches = 128 tensors; all of it = cache_bytes(64, 543) = 18,220,056,576
/// hidden: hidden_bytes(64, 512) = 64 * 512 * 4096 * 2 = 268,435,456
/// </code>
/// </remarks>
public class PlacementPlanOpt67bTests
{
    private const int PromptLen = 512;
    private const int GenLen = 32;
    private const long AllCacheBytes = 18_220_056_576;
    private const long RowBytes = 139_008;
    private const long HiddenBytes = 268_435_456;

    private static readonly OptConfig Opt67b = OptConfig.FromPreset("facebook/opt-6.7b");

    private static PlacementPlan Plan(params double[] percent) =>
        PlacementPlan.Create(Opt67b, Policy.FromPercent(percent, 32, 2), PromptLen, GenLen);

    [Fact]
    public void Half_gpu_half_cpu_weights_should_split_each_layer_at_its_midpoint()
    {
        // line: cpu [0, 50) | gpu [50, 100]
        // SelfAttention: q.w 12.5% c, q.b 25.0% c, k.w 37.5% c, k.b (2h^2 + 2h - h/2) / total = 49.99% c,
        //   v.w (2.5h^2 + 2h) / total = 62.49% g, rest g    -> cpu 2h^2 + 2h, gpu 2h^2 + 4h
        // Mlp: fc1.w 25.0% c, fc1.b (4h^2 + 2h) / total = 49.995% c, fc2.w (6h^2 + 4h) / total = 75.0% g, rest g
        //   -> cpu 4h^2 + 4h, gpu 4h^2 + 3h
        // InputEmbed: tokens 48.04% c, positions 98.04% g. OutputEmbed: ln.w, ln.b ~0% c, tokens 50.002% g
        // cpu = V*h + 32 * (6h^2 + 6h) + 2h = 205,914,112 + 32 * 100,687,872 + 8,192 = 3,427,934,208 el.
        // gpu = 2050*h + 32 * (6h^2 + 7h) + V*h = 8,396,800 + 32 * 100,691,968 + 205,914,112 = 3,436,453,888 el.
        var plan = Plan(50, 50, 100, 0, 100, 0);

        Assert.Equal(new TierBytes(6_872_907_776, 6_855_868_416, 0), plan.WeightBytes);
        Assert.Equal(TierBytes.On(TierKind.Gpu, AllCacheBytes), plan.CacheBytes);
        Assert.Equal(TierBytes.On(TierKind.Gpu, HiddenBytes), plan.HiddenBytes);
        Assert.Equal(66, plan.Layers.Count);
        Assert.Equal(
            [TierKind.Cpu, TierKind.Cpu, TierKind.Cpu, TierKind.Cpu, TierKind.Gpu, TierKind.Gpu, TierKind.Gpu,
             TierKind.Gpu, TierKind.Gpu, TierKind.Gpu],
            plan.Layers[31].Weights.Select(w => w.Home));
    }

    [Fact]
    public void Three_way_weight_split_with_three_way_cache_should_match_the_hand_derivation()
    {
        // weights 20 gpu / 30 cpu / 50 disk; line: disk [0, 50) | cpu [50, 80) | gpu [80, 100]
        // SelfAttention: q.w 12.5 d, q.b 25.0 d, k.w 37.5 d, k.b 49.99 d, v.w 62.49 c, v.b (3h^2 + 2.5h) / total
        //   = 74.99 c, out.w (3.5h^2 + 3h) / total = 87.49 g, rest g   -> disk 2h^2 + 2h, cpu h^2 + h, gpu h^2 + 3h
        // Mlp: fc1.w 25.0 d, fc1.b 49.995 d, fc2.w 74.997 c, rest g     -> disk 4h^2 + 4h, cpu 4h^2, gpu 3h
        // InputEmbed: tokens 48.04 d, positions 98.04 g. OutputEmbed: ln ~0 d, tokens 50.002 c
        // disk = V*h + 32 * (6h^2 + 6h) + 2h       = 3,427,934,208 el. = 6,855,868,416 B
        // cpu  = 32 * (5h^2 + h) + V*h             = 2,890,399,744 el. = 5,780,799,488 B
        // gpu  = 2050*h + 32 * (h^2 + 6h)          =   546,054,144 el. = 1,092,108,288 B
        // cache 30 / 50 / 20 of dim 1 = 1024 rows: gpu int(1024 * 30 / 100) = 307 -> 288 (multiple of 32 heads),
        //   cpu int(1024 * 50 / 100) = 512 -> 512, disk the rest 224;
        //   x 139,008 B a row x 128 tensors: gpu 5,124,390,912, cpu 9,110,028,288, disk 3,985,637,376
        var plan = Plan(20, 30, 30, 50, 0, 100);

        Assert.Equal(new TierBytes(1_092_108_288, 5_780_799_488, 6_855_868_416), plan.WeightBytes);
        Assert.Equal((288L, 512L, 224L), (plan.Cache.GpuLength, plan.Cache.CpuLength, plan.Cache.DiskLength));
        Assert.Equal(new TierBytes(5_124_390_912, 9_110_028_288, 3_985_637_376), plan.CacheBytes);
        Assert.Equal(AllCacheBytes, plan.CacheBytes.Total);
        Assert.Equal(Opt67b.CacheBytes(64, 543), plan.CacheBytes.Total);
        Assert.Equal(TierBytes.On(TierKind.Cpu, HiddenBytes), plan.HiddenBytes);
    }

    [Theory]
    // cache gpu%, cpu% -> rows on gpu, cpu, disk of dim 1 = 1024 (32 heads a sequence)
    [InlineData(50, 50, 512, 512, 0)]       // no disk share: cpu takes the rest
    [InlineData(33, 67, 320, 704, 0)]       // int(337.92) = 337 -> 320; cpu the rest
    [InlineData(30, 50, 288, 512, 224)]
    [InlineData(0, 10, 0, 96, 928)]         // int(102.4) = 102 -> 96; disk the rest
    [InlineData(10, 0, 96, 0, 928)]
    public void Mixed_cache_segments_should_be_multiples_of_n_head(double gpu, double cpu, long g, long c, long d)
    {
        var cache = Plan(100, 0, gpu, cpu, 100, 0).Cache;

        Assert.True(cache.IsMixed);
        Assert.Equal((g, c, d), (cache.GpuLength, cache.CpuLength, cache.DiskLength));
        Assert.Equal(new TierBytes(g * RowBytes, c * RowBytes, d * RowBytes), cache.BytesPerTensor);
        Assert.Equal(AllCacheBytes, cache.TotalBytes.Total);
    }

    [Theory]
    [InlineData(100, 0, TierKind.Gpu)]
    [InlineData(0, 100, TierKind.Cpu)]
    [InlineData(0, 0, TierKind.Disk)]
    public void Whole_tier_cache_should_have_one_home(double gpu, double cpu, TierKind home)
    {
        var cache = Plan(100, 0, gpu, cpu, 100, 0).Cache;

        Assert.Equal(home, cache.Home);
        Assert.Equal(1024L, cache.SegmentLength(home));
        Assert.Equal(TierBytes.On(home, AllCacheBytes), cache.TotalBytes);
    }

    [Fact]
    public void Compressed_weights_should_match_the_packed_layout_sizes()
    {
        // groups of 64 along dim 0; bytes = others * groups * (32 packed + 4 scale/min)
        //   (h, h): 64 groups, 4096 * 64 * 36 = 9,437,184; fc1 (4h, h): 256 groups, 4096 * 256 * 36 = 37,748,736;
        //   fc2 (h, 4h): 64 groups, 16384 * 64 * 36 = 37,748,736; tokens (V, h): 786 groups, 4096 * 786 * 36 =
        //   115,900,416; positions (2050, h): 33 groups, 4096 * 33 * 36 = 4,866,048
        //   block: 4 * 9,437,184 + 6h * 2 + 2 * 37,748,736 + 7h * 2 = 113,352,704; x 32 = 3,627,286,528
        //   + 115,900,416 + 4,866,048 + 2h * 2 + 115,900,416 = 3,863,969,792
        var plan = PlacementPlan.Create(Opt67b,
            Policy.FromPercent(Policy.AllGpuPercent, 32, 2) with { CompressWeight = true }, PromptLen, GenLen);

        Assert.Equal(TierBytes.On(TierKind.Gpu, 3_863_969_792), plan.WeightBytes);
        Assert.Equal(9_437_184, PlacementPlan.CompressedBytes([4096, 4096], CompressionConfig.DefaultWeight));
    }
}

public class PlacementPlanRefusalTests
{
    private static readonly OptConfig Opt67b = OptConfig.FromPreset("opt-6.7b");

    [Fact]
    public void Plan_over_a_tier_capacity_should_be_refused_naming_tier_bytes_and_capacity()
    {
        // all on GPU. Weights: the exact sum of the specs (FlexGen's model_bytes, 13,299,714,240, undercounts):
        //   2 * (V*h * 2 [tokens in and out] + 2050*h + 32 * (4h^2 + 6h + 8h^2 + 7h) + 2h)
        //   = 2 * (411,828,224 + 8,396,800 + 32 * 201,379,840 + 8,192) = 2 * 6,864,388,096 = 13,728,776,192
        // + cache 18,220,056,576 + hidden 268,435,456 = 32,217,268,224
        var policy = Policy.FromPercent(Policy.AllGpuPercent, 32, 2);
        var plan = PlacementPlan.Create(Opt67b, policy, 512, 32);
        Assert.Equal(13_728_776_192L, plan.WeightBytes.Gpu);
        long needed = 13_728_776_192L + 18_220_056_576L + 268_435_456L; // 32,217,268,224

        var ex = Assert.Throws<TierCapacityExceededException>(() =>
            PlacementPlan.Create(Opt67b, policy, 512, 32, new TierCapacities(GpuBytes: 80_000_000_000L / 4)));

        Assert.Equal(TierKind.Gpu, ex.Tier);
        Assert.Equal(needed, ex.NeededBytes);
        Assert.Equal(20_000_000_000L, ex.CapacityBytes);
        Assert.Equal("The Gpu tier needs 32,217,268,224 bytes (weights 13,728,776,192, KV cache 18,220,056,576, " +
            "hidden 268,435,456) but its capacity is 20,000,000,000 bytes.", ex.Message);
    }

    [Fact]
    public void Plan_within_capacities_should_be_accepted_and_cpu_capacity_checked_too()
    {
        var policy = Policy.FromPercent([0, 100, 100, 0, 100, 0], 32, 2);
        var plan = PlacementPlan.Create(Opt67b, policy, 512, 32,
            new TierCapacities(GpuBytes: 18_500_000_000L, CpuBytes: 14_000_000_000L, DiskBytes: 0));
        Assert.Equal(13_728_776_192L, plan.WeightBytes.Cpu);

        var ex = Assert.Throws<TierCapacityExceededException>(() =>
            PlacementPlan.Create(Opt67b, policy, 512, 32, new TierCapacities(CpuBytes: 13_000_000_000L)));
        Assert.Equal(TierKind.Cpu, ex.Tier);
    }

    [Theory]
    [InlineData(50, 50)]
    [InlineData(50, 0)]
    [InlineData(0, 30)]
    public void Split_activations_should_be_refused(double gpu, double cpu)
    {
        var policy = Policy.FromPercent([100, 0, 100, 0, gpu, cpu], 4, 1);

        var ex = Assert.Throws<PlacementException>(() => PlacementPlan.Create(Opt67b, policy, 16, 4));

        Assert.Contains("Activations must live on one tier", ex.Message);
        Assert.Contains("Policy.ActGpuPercent", ex.Message);
    }

    [Fact]
    public void Compressed_mixed_cache_should_be_refused()
    {
        var policy = Policy.FromPercent([100, 0, 50, 50, 100, 0], 4, 1) with { CompressCache = true };

        var ex = Assert.Throws<PlacementException>(() => PlacementPlan.Create(Opt67b, policy, 16, 4));

        Assert.Contains("compressed KV cache must live on one tier", ex.Message);
    }

    [Fact]
    public void Compression_group_dim_beyond_the_tensor_rank_should_be_refused()
    {
        var policy = Policy.FromPercent(Policy.AllGpuPercent, 4, 1) with
        {
            CompressWeight = true,
            CompWeightConfig = new CompressionConfig(4, 64, 2, false),
        };

        var ex = Assert.Throws<PlacementException>(() => PlacementPlan.Create(Opt67b, policy, 16, 4));

        Assert.Equal("Policy.CompWeightConfig.GroupDim = 2 does not exist in weight decoder.embed_tokens.weight " +
            "of shape (50272, 4096), rank 2.", ex.Message);
    }

    [Fact]
    public void Sparse_cpu_attention_over_a_cache_with_a_gpu_segment_should_be_refused()
    {
        var policy = Policy.FromPercent([100, 0, 50, 50, 100, 0], 4, 1) with
        {
            CpuCacheCompute = true,
            AttnSparsity = 0.5,
        };

        var ex = Assert.Throws<PlacementException>(() => PlacementPlan.Create(Opt67b, policy, 16, 4));

        Assert.Contains("Policy.AttnSparsity = 0.5", ex.Message);
    }

    [Fact]
    public void Sequence_longer_than_max_seq_len_should_be_refused()
    {
        var policy = Policy.FromPercent(Policy.AllGpuPercent, 1, 1);

        var ex = Assert.Throws<PlacementException>(() => PlacementPlan.Create(Opt67b, policy, 2000, 50));

        Assert.Equal("prompt_len 2000 + gen_len 50 - 1 = 2049 positions exceed opt-6.7b's max_seq_len 2048.", ex.Message);
        PlacementPlan.Create(Opt67b, policy, 2000, 49); // 2048 positions fit
    }

    [Theory]
    [InlineData(0, 4, "promptLen")]
    [InlineData(8, 0, "genLen")]
    public void Empty_geometry_should_be_refused(int promptLen, int genLen, string parameter)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            PlacementPlan.Create(Opt67b, Policy.FromPercent(Policy.AllGpuPercent, 1, 1), promptLen, genLen));
        Assert.Equal(parameter, ex.ParamName);
    }
}

public class CompressedLayoutTests
{
    [Theory]
    [InlineData("gd0", 0)]
    [InlineData("gd1", 1)]
    [InlineData("gd2", 2)]
    public void Layout_should_match_the_shapes_of_FlexLLMGen_compression_fixtures(string name, int groupDim)
    {
        // tests/Fixtures/compression: 4 bits, groups of 64, asymmetric; inputs (200, 96), (8, 130, 16), (37, 24, 100)
        var dir = Path.Combine(AppContext.BaseDirectory, "Fixtures", "compression");
        var (_, input) = NpyHeaderText.Read(Path.Combine(dir, $"{name}_input.npy"));
        var (packedDtype, packed) = NpyHeaderText.Read(Path.Combine(dir, $"{name}_packed.npy"));
        var (scaleDtype, scale) = NpyHeaderText.Read(Path.Combine(dir, $"{name}_scale.npy"));

        var layout = CompressedLayout.Of(input, new CompressionConfig(4, 64, groupDim, false));

        Assert.Equal(("|u1", "<f2"), (packedDtype, scaleDtype));
        Assert.Equal(packed, layout.DataShape);
        Assert.Equal(scale, layout.ScaleShape);
        Assert.Equal(packed.Aggregate(1L, (a, d) => a * d) + 2 * scale.Aggregate(1L, (a, d) => a * d), layout.Bytes);
    }
}
