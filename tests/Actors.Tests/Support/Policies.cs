namespace FlexGen.Actors.Tests.Support;

using System.Collections.Immutable;
using FlexGen.Tensors.Policies;

public static class TestPolicies
{
    /// <summary>Weights off the GPU, cache over three tiers (1 GPU row, 1 CPU row, 2 disk rows of 4), activations on CPU.</summary>
    public static Policy Offloaded(int batches, bool overlap, bool sep, bool cpuCacheCompute) => new()
    {
        GpuBatchSize = 4,
        NumGpuBatches = batches,
        WGpuPercent = 0,
        WCpuPercent = 50,
        CacheGpuPercent = 25,
        CacheCpuPercent = 25,
        ActGpuPercent = 0,
        ActCpuPercent = 100,
        Overlap = overlap,
        SepLayer = sep,
        CpuCacheCompute = cpuCacheCompute,
    };

    public static ImmutableArray<ImmutableArray<long>> Prompts(int n, int len = 3) =>
        Enumerable.Range(0, n).Select(r => Enumerable.Range(0, len).Select(c => (long)(10 + r * len + c)).ToImmutableArray()).ToImmutableArray();
}
