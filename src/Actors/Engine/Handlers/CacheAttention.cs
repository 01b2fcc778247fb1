namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>
/// The cache segments a compute part attends over at decode (i, j, k): loaded copies, or the homes read in place. With
/// sparse attention the value rows are fetched from the value home by position while attending.
/// </summary>
internal sealed class CacheAttention(BlockRunContext run)
{
    /// <summary>
    /// The segments <paramref name="actor"/> attends over (all of them unless the CPU computes some: cpu_cache_compute).
    /// Value rows fetched while attending are counted in <paramref name="fetched"/>; <paramref name="bytes"/> counts the
    /// rest of what is read; decompressed copies go to <paramref name="temporaries"/>.
    /// </summary>
    public List<CacheSegment> Segments(BlockTask task, PipelineActorKind actor, ComputeSettings compute, List<Tensor> temporaries, ValueRowBytes fetched, out long bytes)
    {
        var home = run.Cache[task.Layer, task.Batch];
        run.Buffers.LoadedCache.TryGet(BatchKey.Of(task), out var loaded);
        long past = run.PastLength(task.Token);
        var device = run.DeviceOf(actor);
        var segments = new List<CacheSegment>();
        bytes = 0;
        for (int s = 0; s < home.Segments.Count; s++)
        {
            var segment = home.Segments[s];
            if (run.CpuAttention && run.Router.CacheAttender(segment.Home) != actor)
            {
                continue;
            }

            (TieredTensor Key, TieredTensor? Value) copy = default;
            bool isLoaded = loaded?.Segments.TryGetValue(s, out copy) == true;
            var (key, value) = isLoaded ? copy : (segment.Key, segment.Value);
            IndexRange[] ranges = [new(0, past), IndexRange.All(segment.Length), IndexRange.All(segment.Key.Shape[2])];
            var keyData = TierTensors.Plain(key, isLoaded ? null : ranges, device, temporaries) // (past, rows, d)
                ?? throw new InvalidOperationException($"cache segment {segment.Key.Name} on {segment.Home} was not loaded for {task}");
            bytes += ReadBytes(key, keyData);
            if (run.FetchesValueRows(segment))
            {
                var valueHome = segment.Value;
                segments.Add(new CacheSegment(keyData, positions => fetched.Count(TierCopy.GatherPositions(valueHome, positions, device)), compute));
                continue;
            }

            var valueData = (value is null ? null : TierTensors.Plain(value, isLoaded ? null : ranges, device, temporaries))
                ?? throw new InvalidOperationException($"cache segment {segment.Value.Name} on {segment.Home} was not loaded for {task}");
            segments.Add(new CacheSegment(keyData, valueData, compute));
            bytes += ReadBytes(value!, valueData);
        }

        return segments;
    }

    /// <summary>Bytes read of a cache tensor: as stored when compressed, else the positions attended over.</summary>
    private static long ReadBytes(TieredTensor source, Tensor data) =>
        source is CompressedTensor compressed ? compressed.StoredBytes : data.NumberOfElements * data.ElementSize;
}

/// <summary>Bytes of the value rows sparse attention fetched during one compute part (a part runs on one thread).</summary>
internal sealed class ValueRowBytes
{
    public long Bytes { get; private set; }

    public Tensor Count(Tensor rows)
    {
        Bytes += rows.NumberOfElements * rows.ElementSize;
        return rows;
    }
}
