namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;


[Collection(TierCollection.Name)]
public class ModelWeightsTests
{
    private static readonly string ModelDirectory = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    private static OptConfig TinyConfig => OptConfig.FromHuggingFaceConfig(Path.Combine(ModelDirectory, "config.json"));

    /// <summary>w_gpu, w_cpu (the rest on disk), with or without 4-bit weights; cache and activations on the GPU.</summary>
    private static PlacementPlan Plan(double wGpu, double wCpu, bool compress = false, bool sepLayer = true)
    {
        var policy = Policy.FromPercent([wGpu, wCpu, 100, 0, 100, 0], gpuBatchSize: 4, numGpuBatches: 2) with
        {
            CompressWeight = compress,
            SepLayer = sepLayer,
        };
        return PlacementPlan.Create(TinyConfig, policy, promptLen: 12, genLen: 10);
    }

    [Theory]
    [InlineData(100, 0, false)]
    [InlineData(20, 30, false)]
    [InlineData(0, 0, false)]
    [InlineData(30, 30, true)]
    public void Weights_should_load_into_their_planned_homes_with_the_file_values(double wGpu, double wCpu, bool compress)
    {
        using var bed = new TierTestBed();
        LoadAndCheck(bed, Plan(wGpu, wCpu, compress));
        bed.AssertNothingLeft();
    }

    private static void LoadAndCheck(TierTestBed bed, PlacementPlan plan)
    {
        using var weights = ModelWeights.Load(plan, bed.Tiers, WeightSource.FromDirectory(ModelDirectory));
        var homes = new HashSet<TierKind>();
        for (var j = 0; j < weights.LayerCount; j++)
        {
            using var loaded = TierTestBed.CopyLayer(weights, j, bed.Tiers.Gpu);
            for (var w = 0; w < loaded.Count; w++)
            {
                var placement = plan.Weight(j, w);
                var home = weights.Layer(j)[w];
                homes.Add(home.Home!.Value);
                Assert.Equal(placement.Home, home.Home);
                Assert.Equal(placement.Compressed, home is CompressedTensor);
                if (home is CompressedTensor compressed)
                {
                    Assert.Equal(placement.Home, compressed.Packed.Home);
                    Assert.Equal(placement.Bytes, compressed.StoredBytes);
                    Assert.Equal(QuantizationArithmetic.Float32, compressed.Tier.Arithmetic); // as FlexLLMGen quantizes weights at load
                }

                using var expectedFile = NpyFile.Read(Path.Combine(ModelDirectory, placement.Spec.FileName));
                using var expected = placement.Compressed ? RoundTrip(expectedFile, plan.Policy.CompWeightConfig) : expectedFile.alias();
                Assert.True(TierTestBed.BitEqual(expected, loaded[w]), $"{placement.Spec.FileName} on {home.Tier.Name}");
            }
        }

        Assert.NotEmpty(homes);
        Assert.Equal(plan.WeightBytes.Disk, bed.Tiers.Disk.Stats.CurrentBytes);
        Assert.Equal(plan.WeightBytes.Cpu, bed.Tiers.Cpu.Stats.CurrentBytes);
        Assert.Equal(plan.WeightBytes.Gpu, bed.Tiers.Gpu.Stats.CurrentBytes);
    }

    /// <summary>FlexLLMGen's weight round trip: quantized at load on the CPU in float32, decompressed to float16.</summary>
    private static Tensor RoundTrip(Tensor tensor, CompressionConfig config)
    {
        using var quantized = GroupQuantizer.Compress(tensor, config, QuantizationArithmetic.Float32);
        return GroupQuantizer.Decompress(quantized, tensor.dtype);
    }

    [Fact]
    public void Dummy_weights_should_be_ones_or_seeded_random_without_files()
    {
        using var bed = new TierTestBed();
        CheckDummy(bed);
        bed.AssertNothingLeft();
    }

    [Fact]
    public void Loading_should_report_every_layer_in_order_and_end_at_the_total_bytes()
    {
        using var bed = new TierTestBed();
        var plan = Plan(20, 30, compress: true);
        var reports = new List<WeightLoadProgress>();
        using (var weights = ModelWeights.Load(plan, bed.Tiers, WeightSource.FromDirectory(ModelDirectory), new ListProgress(reports)))
        {
            Assert.Equal(weights.LayerCount, reports.Count);
        }

        long total = plan.Layers.Sum(l => l.Weights.Sum(w => w.Spec.Bytes));
        long expected = 0;
        for (var j = 0; j < reports.Count; j++)
        {
            expected += plan.Layers[j].Weights.Sum(w => w.Spec.Bytes);
            Assert.Equal(new WeightLoadProgress(j, plan.Layers.Count, expected, total), reports[j]);
        }

        Assert.Equal(total, reports[^1].BytesLoaded);
        Assert.Equal(OptWeightSpecs.Layers(TinyConfig, sepLayer: true).Sum(l => l.WeightBytes), total);
        bed.AssertNothingLeft();
    }

    /// <summary>Collects reports synchronously, in order (<see cref="Progress{T}"/> would post them to the thread pool).</summary>
    private sealed class ListProgress(List<WeightLoadProgress> reports) : IProgress<WeightLoadProgress>
    {
        public void Report(WeightLoadProgress value) => reports.Add(value);
    }

    private static void CheckDummy(TierTestBed bed)
    {
        var plan = Plan(50, 25);
        using (var ones = ModelWeights.Load(plan, bed.Tiers, WeightSource.Dummy()))
        using (var layer = TierTestBed.CopyLayer(ones, 1, bed.Tiers.Cpu))
        {
            using var isOne = layer[0].eq(1);
            using var all = isOne.all();
            Assert.True(all.item<bool>());
        }

        using var first = ModelWeights.Load(plan, bed.Tiers, WeightSource.Dummy(random: true, seed: 3));
        using var second = ModelWeights.Load(plan, bed.Tiers, WeightSource.Dummy(random: true, seed: 3));
        using var other = ModelWeights.Load(plan, bed.Tiers, WeightSource.Dummy(random: true, seed: 4));
        using var a = TierTestBed.CopyLayer(first, 2, bed.Tiers.Cpu);
        using var b = TierTestBed.CopyLayer(second, 2, bed.Tiers.Cpu);
        using var c = TierTestBed.CopyLayer(other, 2, bed.Tiers.Cpu);
        Assert.True(TierTestBed.BitEqual(a[0], b[0]));
        Assert.False(TierTestBed.BitEqual(a[0], c[0]));
        using var a32 = a[0].to_type(ScalarType.Float32);
        using var std = a32.std();
        Assert.InRange(std.item<float>(), 0.015f, 0.025f);
    }

    /// <summary>A copy of the model folder in which one file can be broken.</summary>
    private static string CopyModel()
    {
        var copy = Directory.CreateTempSubdirectory("flexgen-model-").FullName;
        foreach (var file in Directory.GetFiles(ModelDirectory))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }

        return copy;
    }

    public static TheoryData<string> Breakages() => new() { "missing", "shape", "dtype", "corrupt", "truncated" };

    [Theory]
    [MemberData(nameof(Breakages))]
    public void Weight_loading_should_name_the_broken_file_and_leave_nothing_behind(string breakage)
    {
        var model = CopyModel();
        try
        {
            const string victim = "decoder.layers.1.fc1.weight"; // (256, 64) float16
            var path = Path.Combine(model, victim);
            switch (breakage)
            {
                case "missing":
                    File.Delete(path);
                    break;
                case "shape":
                    using (var wrong = zeros([64, 256], ScalarType.Float16))
                    {
                        NpyFile.Write(path, wrong);
                    }

                    break;
                case "dtype":
                    using (var wrong = zeros([256, 64], ScalarType.Float32))
                    {
                        NpyFile.Write(path, wrong);
                    }

                    break;
                case "corrupt":
                    File.WriteAllBytes(path, "this is not a numpy file at all, just text"u8.ToArray());
                    break;
                case "truncated":
                    var bytes = File.ReadAllBytes(path);
                    File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
                    break;
            }

            using var bed = new TierTestBed();
            var error = Assert.Throws<WeightLoadException>(() => ModelWeights.Load(Plan(30, 30), bed.Tiers, WeightSource.FromDirectory(model)));
            Assert.Equal(path, error.Path);
            Assert.Contains(victim, error.Message);
            Assert.Contains(breakage switch
            {
                "missing" => "missing",
                "shape" => "shape (64, 256) disagrees",
                "dtype" => "dtype Float32",
                "corrupt" => "not a valid .npy",
                _ => "truncated",
            }, error.Message);
            bed.AssertNothingLeft();
        }
        finally
        {
            Directory.Delete(model, recursive: true);
        }
    }

    [Fact]
    public void Weight_loading_should_free_everything_when_a_tier_budget_runs_out_midway()
    {
        using var bed = new TierTestBed(gpuCapacity: 2_000_000);
        // All on the GPU: the 6.4 MB embedding alone exceeds the 2 MB budget after position embeddings were loaded.
        var error = Assert.Throws<TierBudgetExceededException>(() => ModelWeights.Load(Plan(100, 0), bed.Tiers, WeightSource.FromDirectory(ModelDirectory)));
        Assert.Equal("gpu", error.Tier);
        bed.AssertNothingLeft();
    }

    [SkippableFact]
    public void Weight_loading_should_free_everything_when_the_disk_fills_midway()
    {
        using var mount = TmpfsMount.TryMount("size=1m", out var whyNot);
        Skip.If(mount is null, whyNot);
        using var bed = new TierTestBed(offloadDirectory: mount.Path, preallocate: false);
        var error = Assert.Throws<DiskTierIOException>(() => ModelWeights.Load(Plan(0, 0), bed.Tiers, WeightSource.FromDirectory(ModelDirectory)));
        Assert.True(error.IsOutOfSpace, error.Message);
        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Plain_weights_should_be_kept_in_the_compute_dtype_on_the_gpu_tier_and_where_it_is_as_wide_with_the_converted_file_values(ScalarType dtype)
    {
        using var bed = new TierTestBed();
        int dtypeBytes = dtype == ScalarType.Float32 ? 4 : 2;
        var policy = Policy.FromPercent([30, 40, 100, 0, 100, 0], gpuBatchSize: 4, numGpuBatches: 2);
        var plan = PlacementPlan.Create(TinyConfig, policy, promptLen: 12, genLen: 10, computeDtypeBytes: dtypeBytes);
        using (var weights = ModelWeights.Load(plan, bed.Tiers, WeightSource.FromDirectory(ModelDirectory), computeDtype: dtype))
        {
            var kinds = new HashSet<TierKind>();
            for (var j = 0; j < weights.LayerCount; j++)
            {
                for (var w = 0; w < weights.Layer(j).Count; w++)
                {
                    var placement = plan.Weight(j, w);
                    var home = weights.Layer(j)[w];
                    kinds.Add(placement.Home);
                    // The GPU tier (the compute tier) holds the compute dtype; CPU and disk too when it is as wide as the
                    // file's float16 (bfloat16: same bytes, no conversion per load), else they keep float16.
                    Assert.Equal(placement.Home == TierKind.Gpu || dtypeBytes == 2 ? dtype : ScalarType.Float16, home.Dtype);
                    Assert.Equal(placement.Home == TierKind.Gpu ? placement.Spec.ElementCount * dtypeBytes : placement.Spec.Bytes, placement.Bytes);
                    using var stored = TierCopy.ToTorch(home, null, CPU);
                    using var file = NpyFile.Read(Path.Combine(ModelDirectory, placement.Spec.FileName));
                    using var expected = file.to(home.Dtype); // converted once: the values a per-call conversion gives
                    Assert.True(TierTestBed.BitEqual(expected, stored), $"{placement.Spec.FileName} on {placement.Home}");
                }
            }

            Assert.Equal(3, kinds.Count); // every tier holds some
            Assert.Equal(plan.WeightBytes.Gpu, bed.Tiers.Gpu.Stats.CurrentBytes);
            Assert.Equal(plan.WeightBytes.Cpu, bed.Tiers.Cpu.Stats.CurrentBytes);
            Assert.Equal(plan.WeightBytes.Disk, bed.Tiers.Disk.Stats.CurrentBytes);
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void A_compute_dtype_whose_size_the_plan_does_not_count_should_be_refused_before_loading()
    {
        using var bed = new TierTestBed();
        var error = Assert.Throws<ArgumentException>(() =>
            ModelWeights.Load(Plan(100, 0), bed.Tiers, WeightSource.Dummy(), computeDtype: ScalarType.Float32));
        Assert.Contains("the plan counts 2", error.Message);
        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(TierKind.Cpu)]
    [InlineData(TierKind.Disk)]
    public void A_converting_copy_to_the_compute_tier_should_give_the_converted_values_in_the_compute_dtype(TierKind from)
    {
        using var bed = new TierTestBed();
        using var values = torch.randn([33, 17], dtype: ScalarType.Float32).to(ScalarType.Float16);
        using var home = bed.Tiers[from].Allocate([33, 17], ScalarType.Float16, "w");
        TierCopy.CopyFrom(home, null, values);

        using var converted = bed.Tiers.Gpu.Allocate([33, 17], ScalarType.Float32, "w@gpu");
        using (var conversion = TierCopy.CopyAs(converted, home))
        {
            conversion.Complete();
        }

        using var same = bed.Tiers.Gpu.Allocate([33, 17], ScalarType.Float16, "w16@gpu");
        using (var copied = TierCopy.CopyAs(same, home))
        {
            Assert.True(copied.IsEmpty); // the same dtype: copied, nothing to convert
        }

        Assert.Equal(ScalarType.Float32, converted.Dtype);
        Assert.Equal(33L * 17 * 4, converted.Bytes);
        using var got = TierCopy.ToTorch(converted, null, CPU);
        using var expected = values.to(ScalarType.Float32);
        Assert.True(TierTestBed.BitEqual(expected, got));
        Assert.Equal(ScalarType.Float16, same.Dtype);
        Assert.True(TierTestBed.BitEqual(values, same.Data));
    }
}
