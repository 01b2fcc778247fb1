namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Tiers;

public class TaskRouterTests
{
    private static TaskRouter Router(int gpuRows, int cpuRows, int diskRows)
    {
        var layers = LayerKinds.BuildLayers(2, sepLayer: true);
        return new TaskRouter(new RoutingPlan(layers, layers.Select(_ => LayerWeightHomes.AllOn(TierKind.Gpu)).ToArray(),
            gpuRows, cpuRows, diskRows, TierKind.Gpu, CpuCacheCompute: false));
    }

    [Theory]
    [InlineData(4, 0, 0, new[] { PipelineActorKind.GpuCompute })] // the whole cache on the GPU tier: its compute writes it
    [InlineData(2, 2, 0, new[] { PipelineActorKind.Copy })] // split: one storer for the GPU and CPU rows
    [InlineData(2, 0, 2, new[] { PipelineActorKind.DiskIo, PipelineActorKind.Copy })]
    [InlineData(0, 4, 0, new[] { PipelineActorKind.Copy })]
    [InlineData(0, 0, 4, new[] { PipelineActorKind.DiskIo })]
    public void A_cache_store_should_run_on_the_compute_only_when_the_whole_cache_is_on_the_gpu_tier(int gpu, int cpu, int disk, PipelineActorKind[] expected)
    {
        var router = Router(gpu, cpu, disk);

        var parts = router.Route(new BlockTask(TaskKind.StoreCache, 1, 1, 0));

        Assert.Equal(expected.Order(), parts.Order());
        // The handler writes the rows whose storer is the part's actor: every home has exactly one of the parts.
        var homes = new[] { (TierKind.Gpu, gpu), (TierKind.Cpu, cpu), (TierKind.Disk, disk) }.Where(h => h.Item2 > 0).Select(h => h.Item1);
        Assert.All(homes, home => Assert.Contains(router.CacheStorer(home), parts));
    }
}
