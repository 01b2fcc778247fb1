using System.Diagnostics;
using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

namespace FlexGen.Tensors.Tests.Placement;

/// <summary>
/// The need formulas of <see cref="MemoryNeed"/> against hand arithmetic, and the budget rule of
/// <see cref="PlacementPlan.CheckBudgets"/>.
/// </summary>
/// <remarks>
/// opt-tiny (V = 50272, h = 64, H = 4 heads, head_dim 16, 3 blocks, ffn F = 256), b = 4, n = 2, s = 12, g = 10, float32
/// compute (d = 4), weights and cache on the CPU, activations on the GPU, overlap on (2 copies of each load):
/// <code>
/// homes:   weights (cpu) 13,432,192; KV cache (cpu) 129,024; hidden (gpu) 8 * 12 * 64 * 2 = 12,288
/// streamed weights (gpu): converted to the compute dtype as they are loaded (the embedding tables kept in their stored
///                    float16: the embedding converts the rows it gathers), into buffers reused per shape and dtype; per
///                    key the most weights two neighbouring layers load (sep_layer: embed, attention, MLP, ..., output):
///                    (V, h) x 1 (output) V*h * d = 12,869,632 and in float16 x 1 (the next token's embed) 6,434,816;
///                    (2050, h) in float16 x 1: 262,400;
///                    (h, h) x 4 (q, k, v, out): 65,536; (h) x 9 (attention's 4 biases and 2 norms + MLP's bias and 2 norms): 2,304;
///                    (F, h), (h, F) x 1: 65,536 each; (F) x 1: 1,024;  together 19,766,784
/// loaded cache (gpu): k and v of one layer and GPU batch: 2 * 16 rows * (21 * 16 * 2 = 672) = 21,504, x 2 = 43,008
/// loaded hidden: 0 (the act home is the GPU)
/// activations (gpu): d * b * (2*s*h + max(s*F, H*s*s, H*(s+g-1)) + V) = 4 * 4 * (1,536 + max(3,072, 576, 84) + 50,272)
///                    = 16 * 54,880 = 878,080
/// gpu: 12,288 + 19,766,784 + 43,008 + 878,080 = 20,700,160;  cpu: 13,432,192 + 129,024 = 13,561,216
/// </code>
/// </remarks>
public class MemoryNeedTests
{
    private const long GpuNeed = 20_700_160;
    private const long CpuNeed = 13_561_216;

    private static readonly OptConfig Tiny =
        OptConfig.FromHuggingFaceConfig(Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny"));

    private static readonly Policy CpuWeightsAndCache = Policy.FromPercent([0, 100, 0, 100, 100, 0], 4, 2);

    private static PlacementPlan Plan(Policy policy, TierBudgets? budgets = null) =>
        PlacementPlan.Create(Tiny, policy, promptLen: 12, genLen: 10, budgets: budgets, computeDtypeBytes: 4);

    [Fact]
    public void Need_should_count_homes_and_working_buffers_per_tier_as_by_hand()
    {
        var need = Plan(CpuWeightsAndCache).Need;

        Assert.Equal(new TierNeed(0, 0, 12_288, 19_766_784, 43_008, 0, 878_080), need.Gpu);
        Assert.Equal(new TierNeed(13_432_192, 129_024, 0, 0, 0, 0, 0), need.Cpu);
        Assert.Equal(default, need.Disk);
        Assert.Equal(new TierBytes(GpuNeed, CpuNeed, 0), need.Total);
        Assert.Equal(Plan(CpuWeightsAndCache).TotalBytes, need.Homes);
    }

    [Fact]
    public void Without_overlap_each_load_should_be_counted_once_and_an_act_home_off_the_gpu_loaded()
    {
        // activations on the CPU: loaded hidden b * s * h * 2 = 4 * 12 * 64 * 2 = 6,144 (x 1 without overlap). Streamed
        // weights: per shape and dtype the most one layer loads: (V, h) 12,869,632 (output) and in float16 6,434,816
        // (embed: the two no longer share a buffer); (2050, h) in float16 262,400; (h, h) x 4, (F, h), (h, F) 65,536 each;
        // (h) x 6 (attention) 1,536; (F) 1,024: 19,766,016.
        var policy = Policy.FromPercent([0, 100, 0, 100, 0, 100], 4, 2) with { Overlap = false };

        var need = Plan(policy).Need;

        Assert.Equal(new TierNeed(0, 0, 0, 19_766_016, 21_504, 6_144, 878_080), need.Gpu);
        Assert.Equal(new TierNeed(13_432_192, 129_024, 12_288, 0, 0, 0, 0), need.Cpu);
    }

    [Theory]
    [InlineData(4, 19_766_016, 19_865_600)]
    [InlineData(2, 6_796_800, 6_796_800)] // bfloat16: read in the compute dtype, nothing staged (both tables share a buffer)
    public void On_the_cpu_disk_weights_stored_in_another_dtype_should_count_their_staging_buffers(int computeDtypeBytes, long withCuda, long onCpu)
    {
        // Every weight on disk, no overlap (one layer in flight either way). float32 on the CPU reads the attention's and
        // the MLP's float16 weights into staging buffers: (h, h) x 4 32,768; (h) x 6 768; (F, h), (h, F) 32,768 each;
        // (F) 512: 99,584 more. The output table's staging buffer is the embedding's float16 one (same shape and dtype).
        var policy = Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 2) with { Overlap = false };

        Assert.Equal(withCuda, PlacementPlan.Create(Tiny, policy, 12, 10, computeDtypeBytes: computeDtypeBytes).Need.Gpu.StreamedWeights);
        Assert.Equal(onCpu, PlacementPlan.Create(Tiny, policy, 12, 10, computeDtypeBytes: computeDtypeBytes, computesOnCpu: true).Need.Gpu.StreamedWeights);
        var deeper = Tiny with { NumHiddenLayers = 7 };
        Assert.Equal(
            PlacementPlan.Create(deeper, policy, 12, 10, computeDtypeBytes: computeDtypeBytes, computesOnCpu: true).Need,
            PlacementPlan.EstimateNeed(deeper, policy, 12, 10, computeDtypeBytes: computeDtypeBytes, computesOnCpu: true));
    }

    [Fact]
    public void On_the_cpu_with_overlap_the_weights_of_two_layers_ahead_should_be_counted_as_by_hand()
    {
        // bfloat16 (d = 2, nothing staged), every weight on disk. With CUDA two neighbouring layers are in flight:
        // (V, h) x 2 12,869,632; (2050, h) 262,400; (h, h) x 4 32,768; (h) x 9 1,152; (F, h), (h, F) x 1 32,768 each;
        // (F) x 1 512: 13,232,000 (the remarks' streamed weights at d = 2). On the CPU three, the computed one and two
        // ahead: (h, h) x 8 (attention, MLP, attention) 65,536; (h) x 15 (6 + 3 + 6) 1,920; (F, h), (h, F), (F) x 2
        // (MLP, attention, MLP) 65,536, 65,536, 1,024; the rest as with CUDA: 13,331,584.
        var policy = Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 2);
        var withCuda = PlacementPlan.Create(Tiny, policy, 12, 10, computeDtypeBytes: 2);
        var onCpu = PlacementPlan.Create(Tiny, policy, 12, 10, computeDtypeBytes: 2, computesOnCpu: true);

        Assert.Equal(1, withCuda.WeightLookahead);
        Assert.Equal(2, onCpu.WeightLookahead);
        Assert.Equal(13_232_000, withCuda.Need.Gpu.StreamedWeights);
        Assert.Equal(13_331_584, onCpu.Need.Gpu.StreamedWeights);
        Assert.Equal(1, PlacementPlan.Create(Tiny, policy with { Overlap = false }, 12, 10, computeDtypeBytes: 2, computesOnCpu: true).WeightLookahead);
    }

    [Fact]
    public void Loads_let_run_more_steps_ahead_should_be_counted_in_flight()
    {
        // Weights on disk, cache and activations on the CPU, attended on the GPU tier (d = 2, nothing staged). Each step
        // in flight holds its loaded cache and hidden states: the computed one and the prefetch steps after it.
        var policy = Policy.FromPercent([0, 0, 0, 100, 0, 100], 4, 1);
        PlacementPlan Plan(Policy p, int prefetch, bool onCpu = false) =>
            PlacementPlan.Create(Tiny, p, 12, 10, computeDtypeBytes: 2, computesOnCpu: onCpu, prefetchSteps: prefetch);

        var one = Plan(policy, 1);
        var two = Plan(policy, 2);

        Assert.Equal(2, two.PrefetchSteps);
        Assert.Equal(one.Need.Gpu.LoadedCache / 2 * 3, two.Need.Gpu.LoadedCache);
        Assert.Equal(one.Need.Gpu.LoadedHidden / 2 * 3, two.Need.Gpu.LoadedHidden);
        // One GPU batch per layer: two steps ahead are two layers' weight loads, the window the CPU's lookahead has.
        Assert.Equal((1, 2), (one.WeightLookahead, two.WeightLookahead));
        Assert.Equal(Plan(policy, 1, onCpu: true).Need.Gpu.StreamedWeights, two.Need.Gpu.StreamedWeights);
        Assert.True(two.Need.Gpu.StreamedWeights > one.Need.Gpu.StreamedWeights);
        // Two GPU batches per layer: two steps reach the next layer only, FlexGen's one; three reach two layers.
        var twoBatches = policy with { NumGpuBatches = 2 };
        Assert.Equal((1, 2), (Plan(twoBatches, 2).WeightLookahead, Plan(twoBatches, 3).WeightLookahead));
        Assert.Equal(Plan(twoBatches, 1).Need.Gpu.StreamedWeights, Plan(twoBatches, 2).Need.Gpu.StreamedWeights);
        // Without overlap nothing runs ahead, whatever the setting.
        Assert.Equal(Plan(policy with { Overlap = false }, 1).Need, Plan(policy with { Overlap = false }, 3).Need);
        // The byte formulas count the same.
        Assert.Equal(two.Need, PlacementPlan.EstimateNeed(Tiny, policy, 12, 10, computeDtypeBytes: 2, prefetchSteps: 2));
    }

    [Theory]
    [InlineData(new double[] { 100, 0, 100, 0, 100, 0 }, true)]
    [InlineData(new double[] { 20, 30, 0, 100, 100, 0 }, true)]
    [InlineData(new double[] { 30, 30, 30, 30, 0, 100 }, false)]
    [InlineData(new double[] { 0, 0, 0, 0, 0, 0 }, false)]
    public void The_byte_formula_estimate_should_equal_the_laid_out_plan(double[] percent, bool sepLayer)
    {
        // opt-tiny with 7 blocks: the estimate sizes it from a 1- and a 2-block copy.
        var config = Tiny with { NumHiddenLayers = 7 };
        var policy = Policy.FromPercent(percent, 4, 2) with { SepLayer = sepLayer };

        var plan = PlacementPlan.Create(config, policy, 12, 10, computeDtypeBytes: 2);

        Assert.Equal(plan.Need, PlacementPlan.EstimateNeed(config, policy, 12, 10, computeDtypeBytes: 2));
    }

    [Fact]
    public void A_run_over_the_cpu_budget_with_the_gpu_emulated_in_cpu_memory_should_be_refused_naming_tier_need_and_budget()
    {
        // Without CUDA the GPU tier is CPU memory: 20,700,160 + 13,561,216 = 34,261,376 bytes count against the CPU budget.
        var fits = new TierBudgets { Cpu = new TierBudget(34_261_376, "test"), GpuInCpuMemory = true };
        Plan(CpuWeightsAndCache, fits);

        var ex = Assert.Throws<TierCapacityExceededException>(() =>
            Plan(CpuWeightsAndCache, fits with { Cpu = new TierBudget(34_261_375, "MemAvailable of /proc/meminfo") }));

        Assert.Equal(TierKind.Cpu, ex.Tier);
        Assert.Equal(34_261_376, ex.NeededBytes);
        Assert.Equal(34_261_375, ex.CapacityBytes);
        Assert.Equal("MemAvailable of /proc/meminfo", ex.BudgetSource);
        Assert.Equal(
            "The Cpu tier (with the Gpu tier, emulated in CPU memory) needs 34,261,376 bytes (0.03 GiB: cpu weights 13,432,192, " +
            "KV cache 129,024; gpu hidden 12,288, streamed weights 19,766,784, loaded cache 43,008, activations 878,080) " +
            "but its budget is 34,261,375 bytes (0.03 GiB, MemAvailable of /proc/meminfo).", ex.Message);
    }

    [Fact]
    public void With_a_real_gpu_each_tier_should_be_checked_against_its_own_budget()
    {
        var budgets = new TierBudgets { Gpu = new TierBudget(GpuNeed, "gpu"), Cpu = new TierBudget(CpuNeed, "cpu"), Disk = new TierBudget(0, "disk") };
        Plan(CpuWeightsAndCache, budgets);

        var gpu = Assert.Throws<TierCapacityExceededException>(() => Plan(CpuWeightsAndCache, budgets with { Gpu = new TierBudget(GpuNeed - 1, "--gpu-mem") }));
        Assert.Equal((TierKind.Gpu, GpuNeed), (gpu.Tier, gpu.NeededBytes));
        Assert.StartsWith("The Gpu tier needs 20,700,160 bytes (0.02 GiB: hidden 12,288, streamed weights 19,766,784, ", gpu.Message);
        Assert.EndsWith("but its budget is 20,700,159 bytes (0.02 GiB, --gpu-mem).", gpu.Message);

        var cpu = Assert.Throws<TierCapacityExceededException>(() => Plan(CpuWeightsAndCache, budgets with { Cpu = new TierBudget(CpuNeed - 1, "--cpu-mem") }));
        Assert.Equal((TierKind.Cpu, CpuNeed), (cpu.Tier, cpu.NeededBytes));
        Assert.NotNull(cpu.Need);
    }

    [Fact]
    public void Weights_on_disk_should_be_checked_against_the_disk_budget()
    {
        var policy = Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 2);
        var ex = Assert.Throws<TierCapacityExceededException>(() =>
            Plan(policy, new TierBudgets { Disk = new TierBudget(13_432_191, "free space at /tmp") }));

        Assert.Equal(TierKind.Disk, ex.Tier);
        Assert.Equal(13_432_192, ex.NeededBytes);
        Assert.Contains("(0.01 GiB: weights 13,432,192) but its budget is 13,432,191 bytes (0.01 GiB, free space at /tmp)", ex.Message);
    }

    [Fact]
    public void A_model_of_a_million_blocks_should_be_refused_by_the_byte_formula_without_laying_out_its_layers()
    {
        // weights: (3,348,608 + 3,217,536 + 1,000,000 * (16,768 + 33,216)) * 2 = 99,981,132,288 bytes, all on the GPU.
        var huge = Tiny with { NumHiddenLayers = 1_000_000 };
        var clock = Stopwatch.StartNew();

        var ex = Assert.Throws<TierCapacityExceededException>(() => PlacementPlan.Create(huge, Policy.FromPercent(Policy.AllGpuPercent, 4, 1), 12, 10,
            budgets: new TierBudgets { Cpu = new TierBudget(24L << 30, "test"), GpuInCpuMemory = true }));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Equal(99_981_132_288, ex.Need!.Gpu.Weights);
        Assert.Contains("gpu weights 99,981,132,288, KV cache ", ex.Message);
    }

    [Fact]
    public void An_absurd_batch_should_be_refused_without_overflowing()
    {
        var ex = Assert.Throws<TierCapacityExceededException>(() => PlacementPlan.Create(Tiny, Policy.FromPercent(Policy.AllGpuPercent, 1_000_000_000, 1_000), 12, 10,
            budgets: new TierBudgets { Gpu = new TierBudget(80L << 30, "test") }));

        Assert.Equal(TierKind.Gpu, ex.Tier);
        Assert.True(ex.NeededBytes > 80L << 30);
    }

    [Fact]
    public void Budgets_should_come_from_the_machine_unless_overridden()
    {
        string missing = Path.Combine(Path.GetTempPath(), "flexgen-no-such-" + Guid.NewGuid().ToString("N"), "sub");

        var detected = TierBudgets.Detect(missing, cuda: false);

        Assert.True(detected.GpuInCpuMemory);
        Assert.Null(detected.Gpu);
        Assert.True(detected.Cpu!.Bytes > 0);
        if (File.Exists("/proc/meminfo")) Assert.Equal("MemAvailable of /proc/meminfo", detected.Cpu.Source);
        Assert.True(detected.Disk!.Bytes > 0);
        Assert.Equal($"free space at {Path.GetTempPath().TrimEnd('/')}", detected.Disk.Source);

        var given = TierBudgets.Detect(missing, cuda: false, new TierCapacities(1, 2, 3), ("--gpu-mem", "--cpu-mem", "--disk-mem"));
        Assert.Equal(new TierBudget(1, "--gpu-mem"), given.Gpu);
        Assert.Equal(new TierBudget(2, "--cpu-mem"), given.Cpu);
        Assert.Equal(new TierBudget(3, "--disk-mem"), given.Disk);
    }

    [Theory]
    [InlineData(1.5, 1_610_612_736L)]
    [InlineData(0.000000001, 1L)]
    [InlineData(0, null)]
    [InlineData(-2, null)]
    [InlineData(double.NaN, null)]
    [InlineData(double.PositiveInfinity, null)]
    [InlineData(1e12, null)]
    public void Budget_gigabytes_should_be_2_to_the_30_bytes_and_positive(double gb, long? bytes) =>
        Assert.Equal(bytes, TierBudgets.BytesOfGb(gb));
}
