namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

/// <summary>
/// The tier budgets on the real backend: the model-level check at <see cref="TorchPipelineBackend.Create"/> (weights
/// and a one-token block's buffers, weight files checked) and the block-level one at <c>Plan(block)</c>, one rule,
/// both before anything is allocated.
/// </summary>
public class BudgetTests
{
    private static readonly OptConfig Tiny = OptConfig.FromHuggingFaceConfig(Fixtures.Model);

    private static EngineSettings Settings(string offload, TierBudgets budgets, string? modelPath = null) => new()
    {
        ModelPath = modelPath ?? Fixtures.Model,
        Model = Tiny,
        Policy = Policy.FromPercent(Policy.AllGpuPercent, 4, 2),
        OffloadDirectory = offload,
        Budgets = budgets,
    };

    [Fact]
    public void A_model_over_a_budget_should_be_refused_at_backend_creation_with_nothing_allocated()
    {
        string offload = Fixtures.NewOffloadDir();
        var settings = Settings(offload, new TierBudgets { Gpu = new TierBudget(1_000_000, "test") });

        var ex = Assert.Throws<TierCapacityExceededException>(() => TorchPipelineBackend.Create(settings, settings.Policy));

        Assert.Equal(TierKind.Gpu, ex.Tier);
        // The same rule as every block's plan, with a one-token block (and its float16 cache: the float32 one fits even less).
        var planned = Assert.Throws<TierCapacityExceededException>(() => PlacementPlan.Create(Tiny, settings.Policy, 1, 1,
            budgets: settings.Budgets, computeDtypeBytes: settings.ComputeDtypeBytes, computesOnCpu: settings.GpuComputesOnCpu));
        Assert.Equal(planned.NeededBytes, ex.NeededBytes);
        Assert.Equal(26_864_384, ex.Need!.Gpu.Weights); // float32 compute: the GPU tier keeps the weights in float32
        Assert.Empty(Directory.EnumerateFileSystemEntries(offload));
    }

    [Fact]
    public void Every_weight_file_should_be_checked_before_anything_is_allocated()
    {
        string offload = Fixtures.NewOffloadDir();
        string model = Path.Combine(offload, "..", "model-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(model);
        try
        {
            foreach (var file in Directory.EnumerateFiles(Fixtures.Model)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
            var last = Tiny.Layers(sepLayer: true).SelectMany(l => l.Weights).Last(w => w.FileName.Contains("layers.2.", StringComparison.Ordinal));
            File.Delete(WeightFiles.PathOf(model, last));

            var settings = Settings(offload, TierBudgets.Unlimited, model);
            var ex = Assert.Throws<WeightLoadException>(() => TorchPipelineBackend.Create(settings, settings.Policy));

            Assert.Contains(last.FileName, ex.Message);
            Assert.Empty(Directory.EnumerateFileSystemEntries(offload)); // no tier, no offload folder made
        }
        finally
        {
            Directory.Delete(model, recursive: true);
        }
    }

    [Fact]
    public async Task A_block_over_a_budget_should_be_refused_by_its_plan_and_the_system_stay_usable()
    {
        string offload = Fixtures.NewOffloadDir();
        var policy = Policy.FromPercent(Policy.AllGpuPercent, 4, 2);
        // A budget that holds a block of 12-token prompts generating 4 tokens, not one of 600-token prompts (on the CPU
        // the two GPU batches compute together: their activations count twice).
        bool onCpu = Settings(offload, TierBudgets.Unlimited).GpuComputesOnCpu;
        var fits = PlacementPlan.Create(Tiny, policy, 12, 4, computeDtypeBytes: 4, computesOnCpu: onCpu).Need.Gpu.Total;
        var settings = Settings(offload, new TierBudgets { Gpu = new TierBudget(fits, "test") });
        await using var flexgen = FlexGenSystem.Start(settings, "budget-blocks");
        GenerateRequest Request(int promptLen) => new()
        {
            PromptIds = Enumerable.Range(0, 8).Select(r => Enumerable.Range(0, promptLen).Select(c => (long)(4 + (r * 31 + c) % 1000))).ToRows(),
            Generation = new(4),
        };

        var error = await Assert.ThrowsAsync<GenerationFailedException>(() => flexgen.GenerateAsync(Request(600)));

        var refused = Assert.IsType<TierCapacityExceededException>(error.InnerException);
        Assert.Equal(TierKind.Gpu, refused.Tier);
        var planned = Assert.Throws<TierCapacityExceededException>(() => PlacementPlan.Create(Tiny, policy, 600, 4,
            budgets: new TierBudgets { Gpu = new TierBudget(fits, "test") }, computeDtypeBytes: 4, computesOnCpu: onCpu));
        Assert.Equal(planned.NeededBytes, refused.NeededBytes);
        Assert.Equal(fits, refused.CapacityBytes);
        var ok = await flexgen.GenerateAsync(Request(12));
        Assert.Equal(8, ok.OutputIds.Length);
    }
}
