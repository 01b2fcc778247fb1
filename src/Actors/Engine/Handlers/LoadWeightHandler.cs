namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors.Models;
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

        var loaded = run.Buffers.Weights.GetOrAdd(LayerKey.Of(task), () => new LoadedWeights(homes.Count, run.WeightBuffers), part);
        bool gathersRows = run.Backend.Layers[task.Layer].Kind.GathersWeightRows();
        long bytes = 0;
        var conversions = new List<(DeviceTensor, TieredTensor)>(mine.Length);
        foreach (int w in mine)
        {
            // Compressed weights travel compressed and are decompressed by the compute that uses them; plain ones
            // arrive in the compute dtype, converted once per load (not per GPU batch and call), into a reused buffer;
            // an embedding table stays in its stored dtype: its compute converts only the rows it gathers.
            if (homes[w] is CompressedTensor)
            {
                loaded.Tensors[w] = TierCopy.CopyTo(homes[w], run.Backend.GpuCompressedWeights!, name: $"{homes[w].Name}@i{task.Token}");
            }
            else
            {
                // Held by the layer's buffer from here on, so a failed copy returns it with the rest.
                var buffer = run.WeightBuffers.Rent(homes[w].Shape, gathersRows ? homes[w].Dtype : run.GpuCompute.Dtype);
                loaded.Tensors[w] = buffer;
                conversions.Add((buffer, homes[w]));
            }
            bytes += TierTensors.StoredBytes(homes[w]);
        }

        // All at once; weights of another dtype are read in their own into staging buffers of the pool, and the compute
        // converts them (LoadedWeights.Convert).
        loaded.Add(TierCopy.CopyAs(conversions, run.WeightBuffers));

        return bytes;
    }
}
