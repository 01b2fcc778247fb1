namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class DummyWeightsTests
{
    private static readonly string ModelDirectory = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    [Theory]
    [InlineData(3, true, 100)]
    [InlineData(-8, false, 100)]
    [InlineData(3, true, 0)] // on disk: written as the repeating pattern
    public void Tier_dummy_random_weights_should_equal_OptWeights_Random_with_the_same_seed(int seed, bool sepLayer, double wCpu)
    {
        using var bed = new TierTestBed(directIo: true);
        var config = OptConfig.FromHuggingFaceConfig(Path.Combine(ModelDirectory, "config.json"));
        var policy = Policy.FromPercent([0, wCpu, 100, 0, 100, 0], gpuBatchSize: 4, numGpuBatches: 2) with { SepLayer = sepLayer };
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

    [Fact]
    public void A_tiled_disk_fill_should_repeat_the_pattern_over_every_chunk_and_the_unaligned_end()
    {
        // Chunks of one pattern (8 KiB), so the fill writes three pieces, the last one short and not block-aligned.
        using var bed = new TierTestBed(directIo: true, chunkBytes: 8192);
        using (var pattern = TierTestBed.RandomTensor([4096], ScalarType.Float16, seed: 5))
        using (var file = bed.Tiers.Disk.Allocate([10_000], ScalarType.Float16, "tiled"))
        {
            TierCopy.FillTiled(file, pattern);
            using var read = TierCopy.ToTorch(file, null, CPU);
            using var repeated = pattern.repeat(3);
            using var expected = repeated.narrow(0, 0, 10_000);
            Assert.True(TierTestBed.BitEqual(expected, read));
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void Dummy_random_weights_larger_than_the_drawn_values_should_repeat_them_and_keep_their_distribution()
    {
        using var scope = NewDisposeScope();
        var spec = new WeightSpec("w", [3, DummyWeights.DrawnElements], ScalarType.Float16, WeightInit.NormScale);
        using var filled = torch.empty([3, DummyWeights.DrawnElements], ScalarType.Float16);
        DummyWeights.FillRandom(filled, spec, seed: 7);
        Assert.True(TierTestBed.BitEqual(filled[0], filled[2]));
        using var asFloat = filled.to(ScalarType.Float32);
        Assert.InRange(asFloat.mean().item<float>(), 0.999, 1.001); // 1 + normal(0, 0.02)
        Assert.InRange(asFloat.std().item<float>(), 0.019, 0.021);
    }
}
