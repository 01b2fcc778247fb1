namespace FlexGen.Tensors.Tests.Planning;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;
using Xunit.Abstractions;
using static FlexGen.Tensors.Tests.Planning.PlanningTestSupport;

/// <summary>
/// The linear program and the searches against FlexLLMGen's answers on the same inputs (tests/Fixtures/cost-model; the
/// CLI tests check all three cases through <c>flexgen plan --json</c>).
/// </summary>
public class CostModelTests(ITestOutputHelper output)
{
    private static readonly PlanPlacement AllGpu = PlanPlacement.FromPercent([100, 0, 100, 0, 100, 0]);

    [Fact]
    public void A_fixed_placement_over_the_budget_should_be_infeasible_and_fit_once_alpha_relaxes_it()
    {
        var strict = CostModel.Evaluate(OnT4("opt-6.7b", 256, 32, alpha: 0.8), new PlanBlock(4, 1), AllGpu);
        var relaxed = CostModel.Evaluate(OnT4("opt-6.7b", 256, 32, alpha: 1.2), new PlanBlock(4, 1), AllGpu);

        Assert.False(strict.Feasible);
        Assert.Equal(0, strict.Throughput);
        Assert.True(relaxed.Feasible);
        Near(104.03284121735655, relaxed.Throughput, 1e-6);
        Near(0.634978272, relaxed.Prefill!.TotalSeconds, 1e-6);
        Near(0.59540240768, relaxed.Decode!.TotalSeconds, 1e-6);
        Near(13623099120.0, relaxed.Gpu!.PrefillPeakBytes, 1e-7);
    }

    [Fact]
    public void The_best_placement_for_a_block_should_match_FlexLLMGens_optimum()
    {
        var best = CostModel.Evaluate(OnT4("opt-6.7b", 256, 32), new PlanBlock(4, 1));

        Assert.True(best.Feasible);
        Near(42.92468552050759, best.Throughput, 1e-4);
        Assert.True(best.Gpu!.PeakBytes <= best.Gpu.BudgetBytes * (1 + 1e-9));
        output.WriteLine(string.Join(' ', best.Placement!.Percent.Select(p => p.ToString("F4"))));
    }

    [Fact]
    public void A_placement_with_hidden_states_on_disk_should_be_infeasible()
    {
        var evaluation = CostModel.Evaluate(OnT4("opt-6.7b", 256, 32), new PlanBlock(1, 1), PlanPlacement.FromPercent([0, 100, 0, 100, 0, 0]));

        Assert.False(evaluation.Feasible);
    }

    [Fact]
    public void FlexLLMGens_search_should_stop_at_its_block_and_the_grid_should_find_a_better_one()
    {
        var problem = OnT4("opt-6.7b", 256, 32);

        var flexgen = PolicySearch.FlexLlmGen(problem);
        var grid = PolicySearch.Grid(problem);

        output.WriteLine($"flexgen: {flexgen.Best!.Block} {flexgen.Best.Throughput:F3} tok/s, {flexgen.ProgramsSolved} programs in {flexgen.Elapsed.TotalSeconds:F2} s");
        output.WriteLine($"grid:    {grid.Best!.Block} {grid.Best.Throughput:F3} tok/s, {grid.ProgramsSolved} programs in {grid.Elapsed.TotalSeconds:F2} s");
        Assert.Equal(new PlanBlock(64, 18), flexgen.Best.Block);
        Near(51.94039152493546, flexgen.Best.Throughput, 1e-4);
        Assert.True(grid.Best.Throughput >= flexgen.Best.Throughput);
    }

    [Fact]
    public void Grid_batch_sizes_should_contain_FlexLLMGens()
    {
        var grid = PolicySearch.GridGpuBatchSizes().Take(12).ToArray();

        Assert.Equal([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64], grid);
    }

    [Fact]
    public void Grid_batch_counts_should_be_every_count_up_to_256_then_2_percent_steps_ending_at_the_most_that_fit()
    {
        Assert.Equal(Enumerable.Range(1, 100), PolicySearch.GridNumGpuBatches(100));
        var counts = PolicySearch.GridNumGpuBatches(10_000).ToArray();

        Assert.Equal(Enumerable.Range(1, 256), counts.Take(256));
        Assert.Equal(10_000, counts[^1]);
        Assert.All(counts.Skip(256).Zip(counts.Skip(257)), pair => Assert.InRange(pair.Second, pair.First + 1, (int)(pair.First * 1.03) + 1));
        Assert.True(counts.Length < 256 + 200, $"{counts.Length} counts");
    }
}
