namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

[Collection(TierCollection.Name)]
public class DummyWeightsTests
{
    private static readonly string ModelDirectory = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    [Theory]
    [InlineData(3, true)]
    [InlineData(-8, false)]
    public void Tier_dummy_random_weights_should_equal_OptWeights_Random_with_the_same_seed(int seed, bool sepLayer)
    {
        using var bed = new TierTestBed();
        var config = OptConfig.FromHuggingFaceConfig(Path.Combine(ModelDirectory, "config.json"));
        var policy = Policy.FromPercent([0, 100, 100, 0, 100, 0], gpuBatchSize: 4, numGpuBatches: 2) with { SepLayer = sepLayer };
        var plan = PlacementPlan.Create(config, policy, promptLen: 12, genLen: 10);
        using (var reference = OptWeights.Random(config, unchecked((ulong)seed)))
        using (var tiered = ModelWeights.Load(plan, bed.Tiers, WeightSource.Dummy(random: true, seed: seed)))
        {
            for (var j = 0; j < tiered.LayerCount; j++)
            {
                using var loaded = TierTestBed.CopyLayer(tiered, j, bed.Tiers.Cpu);
                for (var w = 0; w < loaded.Count; w++)
                {
                    var name = plan.Weight(j, w).Spec.FileName;
                    Assert.True(TierTestBed.BitEqual(reference[name], loaded[w]), $"{name} (layer {j}) differs");
                }
            }
        }

        bed.AssertNothingLeft();
    }
}
