using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

namespace FlexGen.Tensors.Tests.Placement;

/// <summary>
/// Grouped compute (<see cref="PlacementPlan.ComputesBatchesTogether"/>): when it applies, and the working memory it costs.
/// </summary>
/// <remarks>
/// opt-tiny as in <see cref="MemoryNeedTests"/>, s = 12, g = 10, float32 compute (d = 4), b = 4: a GPU batch's activations
/// are d * b * (2*s*h + max(s*F, H*s*s, H*(s+g-1)) + V) = 4 * 4 * 54,880 = 878,080; grouped over n = 4 batches, 3,512,320.
/// </remarks>
public class GroupedComputeNeedTests
{
    private const long BatchActivations = 878_080;

    private static readonly OptConfig Tiny =
        OptConfig.FromHuggingFaceConfig(Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny"));

    private static readonly Policy Resident4x4 = Policy.FromPercent([.. Policy.AllGpuPercent], 4, 4);

    private static PlacementPlan Plan(Policy policy, bool computesOnCpu, TierBudgets? budgets = null) =>
        PlacementPlan.Create(Tiny, policy, promptLen: 12, genLen: 10, budgets: budgets, computeDtypeBytes: 4, computesOnCpu: computesOnCpu);

    [Fact]
    public void Grouping_should_apply_on_the_cpu_to_several_gpu_batches_with_the_whole_cache_attended_on_the_gpu_tier()
    {
        Assert.True(PlacementPlan.ComputesBatchesTogether(Tiny, Resident4x4, computesOnCpu: true));
        Assert.True(PlacementPlan.ComputesBatchesTogether(Tiny, Policy.FromPercent([0, 0, 100, 0, 0, 100], 4, 4), computesOnCpu: true));

        Assert.False(PlacementPlan.ComputesBatchesTogether(Tiny, Resident4x4, computesOnCpu: false));
        Assert.False(PlacementPlan.ComputesBatchesTogether(Tiny, Policy.FromPercent([.. Policy.AllGpuPercent], 4, 1), computesOnCpu: true));
        Assert.False(PlacementPlan.ComputesBatchesTogether(Tiny, Policy.FromPercent([100, 0, 50, 50, 100, 0], 4, 4), computesOnCpu: true));
        Assert.False(PlacementPlan.ComputesBatchesTogether(Tiny, Policy.FromPercent([100, 0, 0, 0, 100, 0], 4, 4), computesOnCpu: true));
        Assert.False(PlacementPlan.ComputesBatchesTogether(Tiny, Resident4x4 with { CpuCacheCompute = true }, computesOnCpu: true));
    }

    [Fact]
    public void A_grouped_block_should_need_its_gpu_batches_activations_at_once()
    {
        var single = Plan(Policy.FromPercent([.. Policy.AllGpuPercent], 4, 1), computesOnCpu: true);
        var perBatch = Plan(Resident4x4, computesOnCpu: false);
        var grouped = Plan(Resident4x4, computesOnCpu: true);

        Assert.False(perBatch.GroupedCompute);
        Assert.True(grouped.GroupedCompute);
        Assert.Equal(BatchActivations, single.Need.Gpu.Working);
        Assert.Equal(BatchActivations, perBatch.Need.Gpu.Working);
        Assert.Equal(4 * BatchActivations, grouped.Need.Gpu.Working);
        Assert.Equal(perBatch.Need.Gpu.Weights, grouped.Need.Gpu.Weights);
        Assert.Equal(perBatch.Need.Gpu.Hidden, grouped.Need.Gpu.Hidden);
        // Attended on the CPU, the cache is kept in float32: twice the float16 cache of the CUDA plan.
        Assert.Equal(2 * perBatch.Need.Gpu.Cache, grouped.Need.Gpu.Cache);
        // The byte formulas agree with the plan, so a grouped block too large is refused before its layers are laid out.
        Assert.Equal(grouped.Need, PlacementPlan.EstimateNeed(Tiny, Resident4x4, 12, 10, computeDtypeBytes: 4, computesOnCpu: true));
    }

    [Fact]
    public void A_grouped_block_with_its_act_home_off_the_gpu_should_load_every_batchs_hidden_states()
    {
        // b * s * h * 2 = 4 * 12 * 64 * 2 = 6,144 per GPU batch, x 2 with overlap, x 4 batches.
        var policy = Policy.FromPercent([100, 0, 100, 0, 0, 100], 4, 4);

        var grouped = Plan(policy, computesOnCpu: true).Need.Gpu;

        Assert.Equal(4 * 6_144 * 2, grouped.LoadedHidden);
        Assert.Equal(6_144 * 2, Plan(policy, computesOnCpu: false).Need.Gpu.LoadedHidden);
    }

    [Fact]
    public void A_budget_between_the_per_batch_and_the_grouped_need_should_refuse_the_grouped_block_naming_its_activations()
    {
        long perBatch = Plan(Resident4x4, computesOnCpu: false).Need.Gpu.Total;
        var budgets = new TierBudgets { Gpu = new TierBudget(perBatch + BatchActivations, "--gpu-mem") };

        Plan(Resident4x4, computesOnCpu: false, budgets); // fits
        var ex = Assert.Throws<TierCapacityExceededException>(() => Plan(Resident4x4, computesOnCpu: true, budgets));

        Assert.Equal(TierKind.Gpu, ex.Tier);
        Assert.Equal(perBatch + 3 * BatchActivations, ex.NeededBytes);
        Assert.Contains($"activations {4 * BatchActivations:N0}", ex.Message);
    }
}
