namespace FlexGen.Actors.Engine;

using System.Collections.Concurrent;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Tiers;

/// <summary>One segment of a cache home along dim 1: rows [Start, Start + Length) of batch * kv rows, on one tier.</summary>
internal sealed record CacheSegmentHome(TierKind Home, long Start, long Length, TieredTensor Key, TieredTensor Value);

/// <summary>The key and value homes of one attention layer and GPU batch, and their segments (one unless mixed).</summary>
internal sealed class CacheHome
{
    public CacheHome(TieredTensor key, TieredTensor value)
    {
        Key = key;
        if (key is MixedTensor mixedKey && value is MixedTensor mixedValue)
        {
            Segments = mixedKey.Segments
                .Select((s, n) => new CacheSegmentHome(TierTensors.HomeOf(s), mixedKey.SegmentStarts[n], s.Shape[1], s, mixedValue.Segments[n]))
                .ToArray();
        }
        else
        {
            Segments = [new CacheSegmentHome(TierTensors.HomeOf(key), 0, key.Shape[1], key, value)];
        }
    }

    /// <summary>(prompt_len + gen_len - 1, batch * kv rows, head_dim).</summary>
    public TieredTensor Key { get; }

    public IReadOnlyList<CacheSegmentHome> Segments { get; }
}

/// <summary>The KV cache of one block in its homes (tiers and offload files), owned until the run is disposed.</summary>
internal sealed class BlockCacheHomes : IDisposable
{
    private readonly KvCache _cache;
    private readonly ConcurrentDictionary<(int J, int K), CacheHome> _homes = new();

    private BlockCacheHomes(KvCache cache) => _cache = cache;

    /// <summary>Allocates every cache tensor of <paramref name="plan"/>; on failure frees what it made.</summary>
    public static BlockCacheHomes Allocate(PlacementPlan plan, MemoryTiers tiers) => new(KvCache.Allocate(plan, tiers));

    /// <summary>The homes of attention layer j and GPU batch k.</summary>
    public CacheHome this[int j, int k] => _homes.GetOrAdd((j, k), at =>
    {
        var (key, value) = _cache.Home(at.J, at.K);
        return new CacheHome(key, value);
    });

    public void Dispose()
    {
        _homes.Clear();
        _cache.Dispose();
    }
}
