namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class KvCacheTests
{
    private static readonly OptConfig Tiny = OptConfig.FromHuggingFaceConfig(Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny", "config.json"));

    public static TheoryData<double, double, bool> CacheHomes() => new()
    {
        { 100, 0, false },  // gpu
        { 0, 100, false },  // cpu
        { 0, 0, false },    // disk
        { 25, 50, false },  // mixed: dim 1 = 4 * 4 heads -> 4 gpu, 8 cpu, 4 disk
        { 0, 100, true },   // compressed on cpu
        { 0, 0, true },     // compressed on disk
    };

    [Theory]
    [MemberData(nameof(CacheHomes))]
    public void Cache_should_store_prefill_and_decode_rows_and_load_them_back(double gpu, double cpu, bool compress)
    {
        using var bed = new TierTestBed();
        StoreAndLoad(bed, gpu, cpu, compress);
        bed.AssertNothingLeft();
    }

    private static void StoreAndLoad(TierTestBed bed, double gpu, double cpu, bool compress)
    {
        var policy = Policy.FromPercent([100, 0, gpu, cpu, 100, 0], gpuBatchSize: 4, numGpuBatches: 2) with { CompressCache = compress };
        var plan = PlacementPlan.Create(Tiny, policy, promptLen: 12, genLen: 10);
        using var cache = KvCache.Allocate(plan, bed.Tiers);
        Assert.Equal([21L, 16, 16], cache.Shape);
        var j = plan.Layers.First(l => l.Layer.HasKvCache).Layer.Index;

        // Prefill rows 0..11, then decode rows 12 and 13, for GPU batch 1.
        using var prefillKey = TierTestBed.RandomTensor([12, 16, 16], ScalarType.Float16, 1);
        using var prefillValue = TierTestBed.RandomTensor([12, 16, 16], ScalarType.Float16, 2);
        Store(cache, j, 1, 0, prefillKey, prefillValue);
        using var stepKey = TierTestBed.RandomTensor([2, 16, 16], ScalarType.Float16, 3);
        using var stepValue = TierTestBed.RandomTensor([2, 16, 16], ScalarType.Float16, 4);
        using (var key12 = stepKey[0..1])
        using (var value12 = stepValue[0..1])
        {
            Store(cache, j, 1, 12, key12, value12);
        }

        using (var key13 = stepKey[1..2])
        using (var value13 = stepValue[1..2])
        {
            Store(cache, j, 1, 13, key13, value13);
        }

        using var expectedKey = cat([prefillKey, stepKey], 0);
        using var expectedValue = cat([prefillValue, stepValue], 0);
        // Loaded as the engine loads a cache: positions [0, 14) of each home copied to a compute tier.
        var (keyHome, valueHome) = cache.Home(j, 1);
        IndexRange[] rows = [new(0, 14)];
        using var gpuKey = (DeviceTensor)TierCopy.CopyTo(keyHome, bed.Tiers.Gpu, rows);
        using var gpuValue = (DeviceTensor)TierCopy.CopyTo(valueHome, bed.Tiers.Gpu, rows);
        using var cpuValue = (DeviceTensor)TierCopy.CopyTo(valueHome, bed.Tiers.Cpu, rows);
        var loaded = (Key: gpuKey.Data, Value: gpuValue.Data);
        Assert.Equal([14L, 16, 16], loaded.Key.shape);
        if (compress)
        {
            // Groups of 64 along dim 2 (16 values: one padded group): within one quantum of each group's range.
            using var actual32 = loaded.Key.to_type(ScalarType.Float32);
            using var expected32 = expectedKey.to_type(ScalarType.Float32);
            using var difference = actual32 - expected32;
            using var absolute = difference.abs();
            using var error = absolute.max();
            Assert.True(error.item<float>() < 0.6f, $"key error {error.item<float>()}");
            Assert.True(TierTestBed.BitEqual(loaded.Value, cpuValue.Data));
        }
        else
        {
            Assert.True(TierTestBed.BitEqual(expectedKey, loaded.Key));
            Assert.True(TierTestBed.BitEqual(expectedValue, loaded.Value));
            Assert.True(TierTestBed.BitEqual(expectedValue, cpuValue.Data));
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Home(j, 2));
    }

    [Theory]
    [InlineData(100, 0, 4, ScalarType.Float32)] // the GPU tier: CPU memory without CUDA, a float32 compute
    [InlineData(0, 100, 4, ScalarType.Float32)]
    [InlineData(50, 50, 4, ScalarType.Float32)] // mixed without a disk share
    [InlineData(100, 0, 2, ScalarType.BFloat16)] // a bfloat16 compute's
    [InlineData(50, 50, 2, ScalarType.BFloat16)]
    [InlineData(0, 0, 4, ScalarType.Float16)] // on disk
    [InlineData(25, 50, 4, ScalarType.Float16)] // mixed with a disk share
    [InlineData(25, 50, 2, ScalarType.Float16)]
    public void A_cache_the_cpu_attends_should_be_allocated_in_its_plans_dtype_and_keep_what_is_stored(double gpu, double cpu, int computeDtypeBytes, ScalarType dtype)
    {
        using var bed = new TierTestBed();
        var policy = Policy.FromPercent([100, 0, gpu, cpu, 100, 0], gpuBatchSize: 4, numGpuBatches: 2);
        var plan = PlacementPlan.Create(Tiny, policy, promptLen: 12, genLen: 10, computeDtypeBytes: computeDtypeBytes, computesOnCpu: true);
        using (var cache = KvCache.Allocate(plan, bed.Tiers))
        {
            var j = plan.Layers.First(l => l.Layer.HasKvCache).Layer.Index;
            var (keyHome, valueHome) = cache.Home(j, 1);
            Assert.Equal(dtype, keyHome.Dtype);
            Assert.Equal(dtype, valueHome.Dtype);

            using var key = TierTestBed.RandomTensor([12, 16, 16], dtype, 5);
            using var value = TierTestBed.RandomTensor([12, 16, 16], dtype, 6);
            Store(cache, j, 1, 0, key, value);
            using var keyBack = TierCopy.ToTorch(keyHome, [new(0, 12)], CPU);
            using var valueBack = TierCopy.ToTorch(valueHome, [new(0, 12)], CPU);
            Assert.True(TierTestBed.BitEqual(key, keyBack));
            Assert.True(TierTestBed.BitEqual(value, valueBack));
        }

        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(100, 0, true, 60, 4, true)] // float32 on the GPU tier in CPU memory: the CPU attends it
    [InlineData(0, 100, true, 60, 4, true)] // float32 on the CPU tier
    [InlineData(50, 50, true, 60, 4, true)] // float32 split between the two: each segment
    [InlineData(100, 0, true, 60, 2, true)] // a bfloat16 compute's bfloat16 cache
    [InlineData(100, 0, true, 50, 4, false)] // 59 positions: FlexGen's order
    [InlineData(100, 0, false, 60, 2, false)] // float16 (no CPU compute): FlexGen's order
    [InlineData(50, 50, false, 60, 2, false)]
    public void A_long_cache_the_cpu_attends_in_memory_should_keep_each_rows_positions_together(double gpu, double cpu, bool computesOnCpu,
        int promptLen, int computeDtypeBytes, bool rowMajor)
    {
        using var bed = new TierTestBed();
        var policy = Policy.FromPercent([100, 0, gpu, cpu, 100, 0], gpuBatchSize: 4, numGpuBatches: 2);
        var plan = PlacementPlan.Create(Tiny, policy, promptLen, genLen: 10, computeDtypeBytes: computeDtypeBytes, computesOnCpu: computesOnCpu);
        Assert.Equal(promptLen + 9 >= KvCache.RowMajorMinPositions, plan.Cache.Shape[0] >= KvCache.RowMajorMinPositions);
        using (var cache = KvCache.Allocate(plan, bed.Tiers))
        {
            var j = plan.Layers.First(l => l.Layer.HasKvCache).Layer.Index;
            var home = cache.Home(j, 0).Key;
            var parts = home is MixedTensor mixed ? mixed.Segments : [home];
            Assert.Equal(gpu is > 0 and < 100 ? 2 : 1, parts.Count);
            foreach (var part in parts)
            {
                var key = Assert.IsType<DeviceTensor>(part).Data; // (seq, rows, d)
                long seq = key.shape[0], rows = key.shape[1], d = key.shape[2];
                Assert.Equal(plan.Cache.Shape[0], seq);
                Assert.Equal(rowMajor ? new[] { d, seq * d, 1 } : new[] { rows * d, d, 1 }, key.stride());
            }

            // A prompt's entries, then one decode position, come back as stored whatever the order in memory.
            var (keyHome, valueHome) = cache.Home(j, 0);
            long positions = plan.Cache.Shape[0], width = plan.Cache.Shape[2], allRows = plan.Cache.Shape[1];
            using var prompt = TierTestBed.RandomTensor([promptLen, allRows, width], keyHome.Dtype, 7);
            using var next = TierTestBed.RandomTensor([1, allRows, width], keyHome.Dtype, 8);
            Store(cache, j, 0, 0, prompt, prompt);
            Store(cache, j, 0, promptLen, next, next);
            using var expected = torch.cat([prompt, next], 0);
            using var keyBack = TierCopy.ToTorch(keyHome, [new(0, promptLen + 1)], CPU);
            using var valueBack = TierCopy.ToTorch(valueHome, [new(0, promptLen + 1)], CPU);
            Assert.True(TierTestBed.BitEqual(expected, keyBack));
            Assert.True(TierTestBed.BitEqual(expected, valueBack));
            Assert.True(positions > promptLen);
        }

        bed.AssertNothingLeft();
    }

    [Theory]
    [InlineData(100, 0, false)]
    [InlineData(0, 100, false)]
    [InlineData(50, 50, false)]
    [InlineData(0, 100, true)]
    public void A_cache_in_memory_should_be_touched_at_allocation_so_its_pages_are_in_before_the_first_store(double gpu, double cpu, bool compress)
    {
        using var bed = new TierTestBed();
        var policy = Policy.FromPercent([100, 0, gpu, cpu, 100, 0], gpuBatchSize: 4, numGpuBatches: 2) with { CompressCache = compress };
        var plan = PlacementPlan.Create(Tiny, policy, promptLen: 12, genLen: 10);
        // Leave the allocator's free lists full of non-zero blocks of the homes' sizes, which an untouched cache would reuse.
        foreach (var garbage in Enumerable.Range(0, 256).Select(_ => full(plan.Cache.Shape.ToArray(), 7, ScalarType.Float16)).ToList())
        {
            garbage.Dispose();
        }

        using (var cache = KvCache.Allocate(plan, bed.Tiers))
        {
            foreach (var layer in plan.Layers.Where(l => l.Layer.HasKvCache))
            {
                for (int k = 0; k < policy.NumGpuBatches; k++)
                {
                    var (key, value) = cache.Home(layer.Layer.Index, k);
                    foreach (var home in Memory(key).Concat(Memory(value)))
                    {
                        using var nonZero = home.count_nonzero();
                        Assert.Equal(0L, nonZero.item<long>());
                    }
                }
            }
        }

        bed.AssertNothingLeft();
    }

    // The plain host tensors a home keeps its bytes in.
    private static IEnumerable<Tensor> Memory(TieredTensor home) => home switch
    {
        DeviceTensor memory => [memory.Data],
        MixedTensor mixed => mixed.Segments.SelectMany(Memory),
        CompressedTensor compressed => Memory(compressed.Packed).Concat(Memory(compressed.Scales)),
        _ => [],
    };

    /// <summary>Writes new rows at <paramref name="position"/> of the cache of (j, k), as the engine stores a step's cache.</summary>
    private static void Store(KvCache cache, int layer, int batch, long position, Tensor key, Tensor value)
    {
        var (keyHome, valueHome) = cache.Home(layer, batch);
        IndexRange[] rows = [new(position, position + key.shape[0])];
        TierCopy.CopyFrom(keyHome, rows, key);
        TierCopy.CopyFrom(valueHome, rows, value);
    }

    [Fact]
    public void Stored_hidden_states_should_come_back_from_the_activation_home()
    {
        using var bed = new TierTestBed();
        using (var hidden = TierTestBed.RandomTensor([4, 12, 64], ScalarType.Float16, 9))
        using (var output = bed.Tiers.Gpu.CopyOf(hidden, "hidden"))
        using (var parked = TierCopy.CopyTo(output, bed.Tiers.Disk, name: "hidden.j3.k1"))
        using (var back = TierCopy.CopyTo(parked, bed.Tiers.Gpu))
        {
            Assert.True(TierTestBed.BitEqual(hidden, ((DeviceTensor)back).Data));
        }

        bed.AssertNothingLeft();
    }
}
