namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors.Tiers;

/// <summary>LoadWeight(i, j): copies the weights of layer j homed on this part's tier to the GPU tier, for token i.</summary>
internal sealed class LoadWeightHandler(BlockRunContext run) : ITaskHandler
{
    public long Execute(TaskPart part)
    {
        var task = part.Task;
        var homes = run.Backend.WeightHomes(task.Layer);
        var mine = Enumerable.Range(0, homes.Count).Where(w => TaskRouter.WeightLoader(TierTensors.HomeOf(homes[w])) == part.Actor).ToArray();
        if (mine.Length == 0)
        {
            return 0; // every weight is read in place (homed on the GPU tier): nothing to hold
        }

        var loaded = run.Buffers.Weights.GetOrAdd(LayerKey.Of(task), () => new LoadedWeights(homes.Count), part);
        long bytes = 0;
        foreach (int w in mine)
        {
            // Compressed weights travel compressed and are decompressed by the compute that uses them.
            MemoryTier destination = homes[w] is CompressedTensor ? run.Backend.GpuCompressedWeights! : run.Gpu;
            loaded.Tensors[w] = TierCopy.CopyTo(homes[w], destination, name: $"{homes[w].Name}@i{task.Token}");
            bytes += TierTensors.StoredBytes(homes[w]);
        }

        return bytes;
    }
}
