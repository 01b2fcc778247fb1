using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using ScalarType = TorchSharp.torch.ScalarType;

namespace FlexGen.Tensors.Tests.Placement;

/// <summary>
/// The cache's stored dtype (<see cref="PlacementPlan.KeepsCacheInComputeDtype"/>): the compute dtype (float32 or bfloat16)
/// where CPU attention reads it in memory and the budgets allow, FlexGen's float16 everywhere else.
/// </summary>
/// <remarks>opt-tiny, b = 4 (16 cache rows), s = 12, g = 10: 21 positions x 16 rows x head_dim 16 per k or v tensor.</remarks>
public class CacheDtypeTests
{
    private const long Float16Tensor = 21 * 16 * 16 * 2;

    private static readonly OptConfig Tiny =
        OptConfig.FromHuggingFaceConfig(Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny"));

    private static PlacementPlan Plan(double cacheGpu, double cacheCpu, bool computesOnCpu, bool compress = false, TierBudgets? budgets = null,
        int computeDtypeBytes = 4) =>
        PlacementPlan.Create(Tiny, Policy.FromPercent([100, 0, cacheGpu, cacheCpu, 100, 0], 4, 2) with { CompressCache = compress },
            promptLen: 12, genLen: 10, budgets: budgets, computeDtypeBytes: computeDtypeBytes, computesOnCpu: computesOnCpu);

    [Theory]
    [InlineData(100, 0)] // the GPU tier, in CPU memory without CUDA
    [InlineData(0, 100)]
    [InlineData(50, 50)] // split over both, no disk share
    public void A_cache_in_memory_attended_on_the_cpu_should_be_kept_in_float32(double gpu, double cpu)
    {
        var cache = Plan(gpu, cpu, computesOnCpu: true).Cache;

        Assert.Equal(ScalarType.Float32, cache.Dtype);
        Assert.True(cache.KeptForCpuAttention);
        Assert.Equal(2 * Float16Tensor, cache.BytesPerTensor.Gpu + cache.BytesPerTensor.Cpu);
        Assert.Equal(0, cache.BytesPerTensor.Disk);
    }

    [Theory]
    [InlineData(100, 0)]
    [InlineData(50, 50)]
    public void A_cache_a_bfloat16_compute_attends_on_the_cpu_should_be_kept_in_bfloat16(double gpu, double cpu)
    {
        // Its keys and values are the compute's bfloat16 values: stored as they are, at float16's bytes.
        var plan = Plan(gpu, cpu, computesOnCpu: true, computeDtypeBytes: 2);

        Assert.Equal(ScalarType.BFloat16, plan.Cache.Dtype);
        Assert.True(plan.Cache.KeptForCpuAttention);
        Assert.Equal(Float16Tensor, plan.Cache.BytesPerTensor.Gpu + plan.Cache.BytesPerTensor.Cpu);
        Assert.Equal(PlacementPlan.EstimateNeed(Tiny, plan.Policy, 12, 10, computeDtypeBytes: 2, computesOnCpu: true).Gpu.Cache, plan.Need.Gpu.Cache);
    }

    [Fact]
    public void A_cache_should_stay_float16_on_cuda_on_disk_or_compressed()
    {
        Assert.Equal(ScalarType.Float16, Plan(100, 0, computesOnCpu: false).Cache.Dtype); // CUDA attends in float16
        Assert.Equal(ScalarType.Float16, Plan(0, 0, computesOnCpu: true).Cache.Dtype); // reading twice the bytes from disk costs more than widening
        Assert.Equal(ScalarType.Float16, Plan(25, 50, computesOnCpu: true).Cache.Dtype); // a disk share
        Assert.Equal(ScalarType.Float16, Plan(25, 50, computesOnCpu: true, computeDtypeBytes: 2).Cache.Dtype);
        Assert.Equal(ScalarType.Float16, Plan(100, 0, computesOnCpu: true, compress: true).Cache.Dtype);
        Assert.False(Plan(100, 0, computesOnCpu: false).Cache.KeptForCpuAttention);
        Assert.Equal(Float16Tensor, Plan(100, 0, computesOnCpu: false).Cache.BytesPerTensor.Gpu);
    }

    [Fact]
    public void A_budget_that_holds_only_the_float16_cache_should_get_the_float16_cache_not_a_refusal()
    {
        var float16Need = Float16Plan().Need;
        var budget = Budget(float16Need.Gpu.Total);

        var plan = Plan(100, 0, computesOnCpu: true, budgets: budget);

        Assert.Equal(ScalarType.Float16, plan.Cache.Dtype);
        Assert.Equal(float16Need, plan.Need);
        Assert.Equal(2 * Float16Tensor * plan.Cache.TensorCount, Plan(100, 0, computesOnCpu: true).Need.Gpu.Cache);
        Assert.Equal(Float16Tensor * plan.Cache.TensorCount, plan.Need.Gpu.Cache);
    }

    [Fact]
    public void A_budget_too_small_for_either_cache_should_be_refused_with_the_float16_need()
    {
        long float16Total = Float16Plan().Need.Gpu.Total;

        var ex = Assert.Throws<TierCapacityExceededException>(() => Plan(100, 0, computesOnCpu: true, budgets: Budget(float16Total - 1)));

        Assert.Equal(TierKind.Gpu, ex.Tier);
        Assert.Equal(float16Total, ex.NeededBytes); // the smallest the run could be: what the user must make room for
    }

    private static TierBudgets Budget(long gpuBytes) => new() { Gpu = new TierBudget(gpuBytes, "--gpu-mem") };

    // The resident plan on the CPU under a budget one byte short of its float32 cache: the float16 one.
    private static PlacementPlan Float16Plan()
    {
        var plan = Plan(100, 0, computesOnCpu: true, budgets: Budget(Plan(100, 0, computesOnCpu: true).Need.Gpu.Total - 1));
        Assert.Equal(ScalarType.Float16, plan.Cache.Dtype);
        return plan;
    }
}
