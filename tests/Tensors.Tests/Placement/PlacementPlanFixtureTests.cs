using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;

namespace FlexGen.Tensors.Tests.Placement;

/// <summary>
/// Placement of the bundled opt-tiny model under each fixture policy (tests/Fixtures/opt-tiny/policies.json), with
/// the fixture geometry: prompts (8, 12), 10 new tokens, gpu_batch_size 4 x 2 GPU batches.
/// </summary>
/// <remarks>
/// Hand derivation (opt-tiny: vocab V = 50272, h = 64, 4 heads, head_dim 16, 3 blocks, ffn 256, max_seq_len 2048):
/// <code>
/// element counts per group
///   InputEmbed     tokens V*h = 3,217,408; positions 2050*h = 131,200            total 3,348,608
///   SelfAttention  4 x (h*h = 4096) + 6 x 64 (4 biases, 2 layer norm)            total 16,768
///   Mlp            fc1 256*64 = 16,384; fc1.b 256; fc2 16,384; fc2.b 64; ln 64+64 total 33,216
///   OutputEmbed    ln 64 + 64; tokens 3,217,408                                  total 3,217,536
/// all weights: 3,348,608 + 3 * (16,768 + 33,216) + 3,217,536 = 6,716,096 elements = 13,432,192 bytes
/// KV cache tensor: (12 + 10 - 1, 4 * 4, 16) = (21, 16, 16) = 5,376 elements = 10,752 bytes;
///   k and v x 3 attention layers x 2 GPU batches = 12 tensors = 129,024 bytes
/// hidden: hidden_bytes(4 * 2, 12) = 8 * 12 * 64 * 2 = 12,288 bytes
/// </code>
/// </remarks>
public class PlacementPlanFixtureTests
{
    private const int PromptLen = 12;
    private const int GenLen = 10;
    private const long AllWeightBytes = 13_432_192;
    private const long CacheBytes = 129_024;
    private const long HiddenBytes = 12_288;

    private static readonly OptConfig Tiny =
        OptConfig.FromHuggingFaceConfig(Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny"));

    private static readonly IReadOnlyDictionary<string, Policy> Policies =
        FlexGenPolicyJson.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "opt-tiny", "policies.json"));

    private static PlacementPlan Plan(string policy) => PlacementPlan.Create(Tiny, Policies[policy], PromptLen, GenLen);

    [Theory]
    // policy,                               weights gpu / cpu / disk,       cache gpu / cpu / disk,   hidden home
    [InlineData("all_gpu",                            AllWeightBytes, 0L, 0L,          CacheBytes, 0L, 0L,   TierKind.Gpu)]
    [InlineData("all_gpu_no_overlap_joint_layer",     AllWeightBytes, 0L, 0L,          CacheBytes, 0L, 0L,   TierKind.Gpu)]
    [InlineData("weights_disk_cache_cpu_cpu_compute", 0L, 0L, AllWeightBytes,          0L, CacheBytes, 0L,   TierKind.Gpu)]
    [InlineData("act_on_cpu",                         AllWeightBytes, 0L, 0L,          CacheBytes, 0L, 0L,   TierKind.Cpu)]
    [InlineData("sparse_attn_0.5_cache_disk",         AllWeightBytes, 0L, 0L,          0L, 0L, CacheBytes,   TierKind.Gpu)]
    // cache 50 / 50: dim 1 = 16 rows; gpu int(16 * 50 / 100) = 8 (a multiple of 4 heads), cpu the other 8:
    // each half 21 * 8 * 16 * 2 = 5,376 bytes per tensor, x 12 tensors = 64,512
    [InlineData("cache_mixed_gpu_cpu_cpu_compute",    AllWeightBytes, 0L, 0L,          64_512L, 64_512L, 0L, TierKind.Gpu)]
    // weights 30 / 30 / 40: see Three_way_weight_split_should_follow_the_midpoint_rule
    [InlineData("weights_split_3way_cache_cpu",       387_968L, 12_896_128L, 148_096L, 0L, CacheBytes, 0L,   TierKind.Gpu)]
    public void Fixture_policy_should_place_bytes_as_derived_by_hand(string policy,
        long wGpu, long wCpu, long wDisk, long cGpu, long cCpu, long cDisk, TierKind hiddenHome)
    {
        var plan = Plan(policy);

        Assert.Equal(new TierBytes(wGpu, wCpu, wDisk), plan.WeightBytes);
        Assert.Equal(new TierBytes(cGpu, cCpu, cDisk), plan.CacheBytes);
        Assert.Equal(TierBytes.On(hiddenHome, HiddenBytes), plan.HiddenBytes);
        Assert.Equal(AllWeightBytes + CacheBytes + HiddenBytes, plan.TotalBytes.Total);
        Assert.Equal([21L, 16, 16], plan.Cache.Shape);
        Assert.Equal(12, plan.Cache.TensorCount);
    }

    [Fact]
    public void Three_way_weight_split_should_follow_the_midpoint_rule()
    {
        // weights 30% gpu, 30% cpu, 40% disk: the line is disk [0, 40) | cpu [40, 70) | gpu [70, 100].
        var plan = Plan("weights_split_3way_cache_cpu");
        var d = TierKind.Disk;
        var c = TierKind.Cpu;
        var g = TierKind.Gpu;

        // InputEmbed: tokens mid 1,608,704 / 3,348,608 = 48.0% -> cpu; positions (3,348,608 - 65,600) = 98.0% -> gpu
        Assert.Equal([c, g], Homes(plan, 0));
        // SelfAttention (total 16,768), midpoints: q.w 2048 = 12.2% d, q.b 4128 = 24.6% d, k.w 6208 = 37.0% d,
        // k.b 8288 = 49.4% c, v.w 10368 = 61.8% c, v.b 12448 = 74.2% g, out.w 14528 = 86.6% g, out.b, ln.w, ln.b g
        //   disk (4096 + 64 + 4096) * 2 = 16,512; cpu (64 + 4096) * 2 = 8,320; gpu (64 + 4096 + 3 * 64) * 2 = 8,704
        Assert.Equal([d, d, d, c, c, g, g, g, g, g], Homes(plan, 1));
        // Mlp (total 33,216): fc1.w 8192 = 24.7% d, fc1.b 16,512 = 49.7% c, fc2.w 24,832 = 74.8% g, rest g
        //   disk 32,768; cpu 512; gpu (16,384 + 3 * 64) * 2 = 33,152
        Assert.Equal([d, c, g, g, g, g], Homes(plan, 2));
        // OutputEmbed (total 3,217,536): ln.w 32 and ln.b 96 ~0% d; tokens 1,608,832 = 50.002% c
        Assert.Equal([d, d, c], Homes(plan, 7));
        Assert.Equal(new TierBytes(8_704 + 33_152, 8_320 + 512, 16_512 + 32_768), plan.Layers[1].Bytes + plan.Layers[2].Bytes);
        // totals: disk 3 * (16,512 + 32,768) + 256 = 148,096
        //         cpu  6,434,816 (input tokens) + 3 * (8,320 + 512) + 6,434,816 (output tokens) = 12,896,128
        //         gpu  262,400 (positions) + 3 * (8,704 + 33,152) = 387,968
        Assert.Equal(new TierBytes(387_968, 12_896_128, 148_096), plan.WeightBytes);
        Assert.Equal(12.2, plan.Weight(1, 0).MidPercent, 1);
    }

    [Fact]
    public void Weights_on_cpu_should_be_pinned_when_1d_or_pin_weight()
    {
        var plan = Plan("weights_split_3way_cache_cpu");
        Assert.True(plan.Weight(1, 3).Pinned);  // k_proj.bias on cpu: 1-D, always pinned
        Assert.True(plan.Weight(1, 4).Pinned);  // v_proj.weight on cpu, pin_weight true
        Assert.False(plan.Weight(1, 0).Pinned); // q_proj.weight on disk: nothing to pin

        var unpinned = PlacementPlan.Create(Tiny, Policies["weights_split_3way_cache_cpu"] with { PinWeight = false },
            PromptLen, GenLen);
        Assert.True(unpinned.Weight(1, 3).Pinned);
        Assert.False(unpinned.Weight(1, 4).Pinned);
    }

    [Fact]
    public void Joint_layers_should_place_attention_and_mlp_as_two_groups()
    {
        var policy = Policies["weights_split_3way_cache_cpu"];
        var sep = PlacementPlan.Create(Tiny, policy, PromptLen, GenLen);
        var joint = PlacementPlan.Create(Tiny, policy with { SepLayer = false }, PromptLen, GenLen);

        Assert.Equal(8, sep.Layers.Count);
        Assert.Equal(5, joint.Layers.Count);
        // FlexGen's TransformerLayer calls init_weight_list for attention and MLP separately: same homes as sep.
        Assert.Equal(sep.Layers.SelectMany(l => l.Weights).Select(w => (w.Spec.FileName, w.Home)),
            joint.Layers.SelectMany(l => l.Weights).Select(w => (w.Spec.FileName, w.Home)));
        Assert.Equal(sep.WeightBytes, joint.WeightBytes);
    }

    [Fact]
    public void Mixed_cache_should_split_dim_1_into_gpu_and_cpu_segments()
    {
        var cache = Plan("cache_mixed_gpu_cpu_cpu_compute").Cache;

        Assert.True(cache.IsMixed);
        Assert.Null(cache.Home);
        Assert.Equal((8L, 8L, 0L), (cache.GpuLength, cache.CpuLength, cache.DiskLength));
        Assert.Equal(new TierBytes(5_376, 5_376, 0), cache.BytesPerTensor);
    }

    [Fact]
    public void Compressed_weights_should_count_packed_data_and_scales()
    {
        // 4 bits, groups of 64 along dim 0; bytes = others * groups * 32 (packed) + others * groups * 2 * 2 (scale, min):
        //   tokens (50272, 64): 786 groups: 64 * 786 * 32 + 64 * 786 * 4 = 1,609,728 + 201,216 = 1,810,944
        //   positions (2050, 64): 33 groups: 67,584 + 8,448 = 76,032
        //   (64, 64): 1 group: 2,048 + 256 = 2,304; attention 4 * 2,304 + 6 * 64 * 2 (1-D, uncompressed) = 9,984
        //   fc1 (256, 64): 4 groups: 8,192 + 1,024 = 9,216; fc2 (64, 256): 1 group, others 256: 8,192 + 1,024 = 9,216
        //   mlp 2 * 9,216 + (256 + 64 + 64 + 64) * 2 = 19,328
        //   total 1,810,944 + 76,032 + 3 * (9,984 + 19,328) + 256 + 1,810,944 = 3,786,112
        var plan = Plan("compress_weight");

        Assert.Equal(TierBytes.On(TierKind.Gpu, 3_786_112), plan.WeightBytes);
        Assert.True(plan.Weight(0, 0).Compressed);
        Assert.Equal(1_810_944, plan.Weight(0, 0).Bytes);
        Assert.False(plan.Weight(1, 1).Compressed); // q_proj.bias: 1-D
        Assert.Equal(TierBytes.On(TierKind.Gpu, CacheBytes), plan.CacheBytes);
    }

    [Fact]
    public void Compressed_cache_should_count_packed_data_and_scales()
    {
        // cache tensor (21, 16, 16), groups of 64 along dim 2: 1 group (16 padded to 64):
        //   data 21 * 16 * 32 = 10,752 bytes; scale (21, 16, 1, 2) float16 = 1,344 bytes; 12,096 per tensor
        //   x 12 tensors = 145,152 (more than uncompressed: head_dim 16 is padded to a group of 64)
        var plan = Plan("compress_cache");
        Assert.True(plan.Cache.Compressed);
        Assert.Equal(TierBytes.On(TierKind.Gpu, 145_152), plan.CacheBytes);

        var both = Plan("compress_both_offloaded");
        Assert.Equal(TierBytes.On(TierKind.Cpu, 3_786_112), both.WeightBytes);
        Assert.Equal(TierBytes.On(TierKind.Cpu, 145_152), both.CacheBytes);
        Assert.Equal(TierBytes.On(TierKind.Gpu, HiddenBytes), both.HiddenBytes);
    }

    [Fact]
    public void Every_fixture_policy_should_be_placeable()
    {
        Assert.All(Policies, p => PlacementPlan.Create(Tiny, p.Value, PromptLen, GenLen));
    }

    private static TierKind[] Homes(PlacementPlan plan, int layer) => plan.Layers[layer].Weights.Select(w => w.Home).ToArray();
}
