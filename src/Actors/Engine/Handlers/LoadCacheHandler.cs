namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Tiers;

/// <summary>
/// LoadCache(i, j, k): copies positions [0, past) of the cache segments this part loads (see
/// <see cref="Pipeline.TaskRouter.CacheLoader"/>) to where they are attended over: the GPU tier, or the CPU for CPU
/// attention; compressed segments stay compressed (the compute decompresses them).
/// </summary>
internal sealed class LoadCacheHandler(BlockRunContext run) : ITaskHandler
{
    public long Execute(TaskPart part)
    {
        var task = part.Task;
        var home = run.Cache[task.Layer, task.Batch];
        var mine = Enumerable.Range(0, home.Segments.Count).Where(s => run.Router.CacheLoader(home.Segments[s].Home) == part.Actor).ToArray();
        if (mine.Length == 0)
        {
            return 0; // rows read in place by the compute: nothing to hold
        }

        var loaded = run.Buffers.LoadedCache.GetOrAdd(BatchKey.Of(task), () => new LoadedCache(), part);
        long past = run.PastLength(task.Token);
        long bytes = 0;
        foreach (int s in mine)
        {
            var segment = home.Segments[s];
            bool toCpu = run.Router.CacheAttender(segment.Home) == PipelineActorKind.CpuCompute;
            MemoryTier destination = segment.Key is CompressedTensor
                ? (toCpu ? run.Backend.CpuCompressedCache! : run.Backend.GpuCompressedCache!)
                : (toCpu ? run.Backend.Tiers.Cpu : run.Gpu);
            IndexRange[] ranges = [new(0, past), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            var key = TierCopy.CopyTo(segment.Key, destination, ranges);
            try
            {
                // Sparse attention fetches only the value rows it picks, when it computes (FlexGen's _sparse_attention_value).
                var value = run.FetchesValueRows(segment) ? null : TierCopy.CopyTo(segment.Value, destination, ranges);
                loaded.Segments[s] = (key, value);
                bytes += TierTensors.StoredBytes(key) + (value is null ? 0 : TierTensors.StoredBytes(value));
            }
            catch
            {
                key.Dispose();
                throw;
            }
        }

        return bytes;
    }
}
