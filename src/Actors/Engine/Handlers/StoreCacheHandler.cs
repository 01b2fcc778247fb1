namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors.Tiers;

/// <summary>
/// StoreCache(i, j, k): writes the compute's new cache entries into the rows of the cache homes this part stores (see
/// <see cref="TaskRouter.CacheStorer"/>), at positions [start, start + s). The entries are freed after the last part's release.
/// </summary>
internal sealed class StoreCacheHandler(BlockRunContext run) : ITaskHandler
{
    public long Execute(TaskPart part)
    {
        var task = part.Task;
        var home = run.Cache[task.Layer, task.Batch];
        var entries = run.Buffers.NewCache.Get(BatchKey.Of(task));
        long start = task.Token == 0 ? 0 : run.PastLength(task.Token);
        long length = entries.Key.Shape[0];
        long bytes = 0;
        foreach (var segment in home.Segments.Where(s => run.Router.CacheStorer(s.Home) == part.Actor))
        {
            IndexRange[] ranges = [new(start, start + length), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            // (s, rows, d), already in the home's dtype: the compute made the entries so (a mismatch is refused by the copy).
            var key = entries.Key.Data.narrow(1, segment.Start, segment.Length).contiguous();
            var value = entries.Value.Data.narrow(1, segment.Start, segment.Length).contiguous();
            TierCopy.CopyFrom(segment.Key, ranges, key);
            TierCopy.CopyFrom(segment.Value, ranges, value);
            bytes += 2 * key.NumberOfElements * key.ElementSize;
        }

        return bytes;
    }
}
