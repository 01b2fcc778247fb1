namespace FlexGen.Tensors.Layers;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>The new hidden states of an attention layer and the KV-cache entries it produced.</summary>
/// <param name="Hidden">(batch, seq, h) in the compute dtype.</param>
/// <param name="NewKey">(seq, batch * kv_heads, head_dim): FlexGen's cache layout; seq = 1 at decode.</param>
/// <param name="NewValue">(seq, batch * kv_heads, head_dim).</param>
public sealed record AttentionOutput(Tensor Hidden, Tensor NewKey, Tensor NewValue) : IDisposable
{
    public void Dispose()
    {
        Hidden.Dispose();
        NewKey.Dispose();
        NewValue.Dispose();
    }
}

/// <summary>
/// The decode step's projections of the new token, before attention.
/// </summary>
/// <param name="Query">(batch * kv_heads, groups, head_dim), already scaled (head_dim^-0.5): the queries of each cache
/// row, one per query head sharing that KV head (groups = heads / kv_heads: 1 without grouped-query attention; query
/// head <c>kv_head * groups + g</c> at column g).</param>
/// <param name="NewKey">(1, batch * kv_heads, head_dim).</param>
/// <param name="NewValue">(1, batch * kv_heads, head_dim).</param>
public sealed record DecodeProjection(Tensor Query, Tensor NewKey, Tensor NewValue) : IDisposable
{
    public void Dispose()
    {
        Query.Dispose();
        NewKey.Dispose();
        NewValue.Dispose();
    }
}

/// <summary>
/// Value rows of a cache segment at chosen positions, for sparse decode attention (FlexGen's
/// <c>_sparse_attention_value</c> copies only these rows from the value cache's home).
/// <paramref name="positions"/> (k, segment_len) int64 on the compute device: position p of segment row r. Returns
/// (k, segment_len, head_dim) with row (j, r) = value[positions[j, r], r, :], any dtype, any device; the attention
/// disposes it.
/// </summary>
public delegate Tensor ValueRowFetcher(Tensor positions);

/// <summary>
/// One segment of a KV cache split along dim 1 (batch * kv_heads), FlexGen's mixed-device cache, with how the
/// segment is computed: where <see cref="Key"/> lives and in <see cref="Compute"/>'s dtype.
/// </summary>
/// <param name="Key">(>= past_len, segment_len, head_dim): positions [0, past_len) are read.</param>
/// <param name="Value">same shape as Key; null when <see cref="ValueRows"/> fetches the rows sparse attention picks.</param>
/// <param name="Compute">the dtype this segment computes in (float32/bfloat16 on CPU, float16 on CUDA).</param>
public sealed record CacheSegment(Tensor Key, Tensor? Value, ComputeSettings Compute)
{
    /// <summary>A segment whose value rows are fetched by position (sparse attention only).</summary>
    public CacheSegment(Tensor key, ValueRowFetcher valueRows, ComputeSettings compute)
        : this(key, (Tensor?)null, compute)
    {
        ValueRows = valueRows ?? throw new ArgumentNullException(nameof(valueRows));
    }

    /// <summary>Fetches value rows by position instead of reading <see cref="Value"/>; null when Value is given.</summary>
    public ValueRowFetcher? ValueRows { get; }
}

/// <summary>
/// Decode attention over KV-cache segments, free of any family's projections: the family projects the new token
/// (<see cref="DecodeProjection"/>), this attends each segment where it lives, the family merges the values. Cache
/// tensors use FlexGen's layout (seq, batch * kv_heads, head_dim), row <c>b * kv_heads + head</c>.
/// </summary>
public static class SegmentAttention
{
    /// <summary>
    /// The dtype decode attention computes in on <paramref name="device"/>: on the CPU float32 whatever the compute
    /// dtype (FlexGen's CPU attention is float32 too). libtorch's bfloat16 batched matmuls over the permuted cache are
    /// 4-10x slower than float32 here (cache of 64-256 positions x 96-384 rows: 2.1-20 ms vs 0.28-6 ms per layer),
    /// and float32 scores and softmax only remove roundings; the values are converted back by the caller. Elsewhere
    /// the compute dtype.
    /// </summary>
    public static ComputeSettings AttentionCompute(ComputeSettings compute, Device device)
    {
        ArgumentNullException.ThrowIfNull(compute);
        return device.type == DeviceType.CPU && compute.Dtype != ScalarType.Float32
            ? new ComputeSettings(ScalarType.Float32, compute.MaskFill)
            : compute;
    }

    /// <summary>
    /// Attention of the projected new token over every segment of a cache split along dim 1 (consecutive, covering
    /// all batch * kv_heads rows, FlexGen's mixed-device attention); each segment is computed where its tensors
    /// live, in its own dtype (<see cref="AttentionCompute"/>). Consecutive segments on one device in one dtype (a
    /// grouped compute's batches, each over its own cache) are attended together: their scores in one tensor, one
    /// mask, one softmax, one new-token product, and only the products with each segment's keys and values apart
    /// (the same numbers; OPT-125m's 12 layers at 4 batches x 8 rows, a plain loop: attention 23-26 -> 21-24 ms a step,
    /// at hidden 96, where the operations' overhead is all, 12.4-14.1 -> 10.9-11.9). Returns the values
    /// (rows, groups, head_dim) of each run of segments attended together, in row order.
    /// </summary>
    public static IReadOnlyList<Tensor> AttendAll(
        DecodeProjection projection, Tensor attentionMask, IReadOnlyList<CacheSegment> segments, int kvHeads,
        double attnSparsity)
    {
        ArgumentNullException.ThrowIfNull(projection);
        ArgumentNullException.ThrowIfNull(segments);
        long rows = projection.Query.shape[0];
        long covered = 0;
        for (var i = 0; i < segments.Count; i++)
        {
            ArgumentNullException.ThrowIfNull(segments[i], $"segments[{i}]");
            LayerMath.CheckRank(segments[i].Key, 3, $"segments[{i}].Key", "(seq, rows, head_dim)");
            covered += segments[i].Key.shape[1];
        }

        // Before any segment is attended: a wrong split is reported without first computing the others.
        if (covered != rows)
        {
            throw new ArgumentException(
                $"Cache segments cover {covered} of the batch * n_head = {rows} rows along dim 1 (n_head: the KV heads per sequence).", nameof(segments));
        }

        // Runs of consecutive segments with one device and one attention dtype.
        var runs = new List<(ComputeSettings Compute, Device Device, List<SegmentRows> Parts)>();
        long start = 0;
        foreach (var segment in segments)
        {
            var part = new SegmentRows(segment.Key, segment.Value, segment.ValueRows, start);
            var device = segment.Key.device;
            var compute = AttentionCompute(segment.Compute, device);
            if (runs.Count > 0 && runs[^1].Compute == compute && SameDevice(runs[^1].Device, device))
            {
                runs[^1].Parts.Add(part);
            }
            else
            {
                runs.Add((compute, device, [part]));
            }

            start += segment.Key.shape[1];
        }

        return runs.Select(run => Attend(projection, attentionMask, run.Parts, kvHeads, run.Compute, attnSparsity)).ToArray();
    }

    /// <summary>
    /// Decode, second part, for one cache segment: rows [<paramref name="rowStart"/>, rowStart + segment length)
    /// of batch * kv_heads (rowStart and the length multiples of kv_heads). Runs on the device of
    /// <paramref name="keyCache"/> in <paramref name="compute"/>'s dtype (the query, the new key/value and the mask
    /// rows are brought there). Dense: softmax over the t cached positions and the new token. Sparse
    /// (<paramref name="attnSparsity"/> &lt; 1, FlexGen's <c>_sparse_attention_value</c>): the same softmax weights,
    /// then only the top k = (int)(attnSparsity * t) cached positions per row plus the new token contribute, not
    /// renormalised (with grouped queries, each query head picks its own top k). Returns (segment rows, groups,
    /// head_dim) on the segment's device in <see cref="AttentionCompute"/>'s dtype (float32 on the CPU).
    /// </summary>
    public static Tensor AttendSegment(
        DecodeProjection projection, Tensor attentionMask, Tensor keyCache, Tensor valueCache, long rowStart,
        int kvHeads, ComputeSettings compute, double attnSparsity = 1.0)
    {
        ArgumentNullException.ThrowIfNull(keyCache);
        ArgumentNullException.ThrowIfNull(valueCache);
        ArgumentNullException.ThrowIfNull(compute);
        return Attend(projection, attentionMask, [new SegmentRows(keyCache, valueCache, null, rowStart)], kvHeads,
            AttentionCompute(compute, keyCache.device), attnSparsity);
    }

    /// <summary>
    /// <see cref="AttendSegment(DecodeProjection, Tensor, Tensor, Tensor, long, int, ComputeSettings, double)"/> with the
    /// value rows fetched by position: sparse attention (<paramref name="attnSparsity"/> &lt; 1) asks
    /// <paramref name="valueRows"/> only for the top-k positions of each row, so only those value rows are read from
    /// wherever the cache lives. Gives the same numbers as reading the whole value cache.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="attnSparsity"/> is 1: dense attention needs the whole value cache.</exception>
    public static Tensor AttendSegment(
        DecodeProjection projection, Tensor attentionMask, Tensor keyCache, ValueRowFetcher valueRows, long rowStart,
        int kvHeads, ComputeSettings compute, double attnSparsity)
    {
        ArgumentNullException.ThrowIfNull(keyCache);
        ArgumentNullException.ThrowIfNull(valueRows);
        ArgumentNullException.ThrowIfNull(compute);
        return Attend(projection, attentionMask, [new SegmentRows(keyCache, null, valueRows, rowStart)], kvHeads,
            AttentionCompute(compute, keyCache.device), attnSparsity);
    }

    // A segment's cache and where its rows start among batch * kv_heads.
    private sealed record SegmentRows(Tensor Key, Tensor? Value, ValueRowFetcher? ValueRows, long RowStart)
    {
        public long Rows => Key.shape[1];
    }

    private static bool SameDevice(Device a, Device b) => a.type == b.type && a.index == b.index;

    // Consecutive segments on one device attended together in the attention dtype `compute`: the scores of all their
    // rows in one tensor, masked and softmaxed once; each segment's keys and values multiplied on their own.
    private static Tensor Attend(
        DecodeProjection projection, Tensor attentionMask, IReadOnlyList<SegmentRows> parts, int kvHeads,
        ComputeSettings compute, double attnSparsity)
    {
        ArgumentNullException.ThrowIfNull(projection);
        LayerMath.CheckRank(attentionMask, 2, nameof(attentionMask), "(batch, past + 1)");
        if (!(attnSparsity >= 0 && attnSparsity <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(attnSparsity), attnSparsity, "attnSparsity must be in [0, 1].");
        }

        var device = parts[0].Key.device;
        compute.EnsureSupportedOn(device);
        long rows = projection.Query.shape[0], groups = projection.Query.shape[1], headDim = projection.Query.shape[2];
        long srcLen = attentionMask.shape[1];
        long past = srcLen - 1;
        foreach (var part in parts)
        {
            CheckSegment(part, rows, headDim, past, kvHeads, attnSparsity);
        }

        long rowStart = parts[0].RowStart, runRows = parts.Sum(p => p.Rows);
        long runBatch = runRows / kvHeads;
        using var scope = NewDisposeScope();
        var mask = LayerMath.MaskAsBool(attentionMask, rows / kvHeads, device).narrow(0, rowStart / kvHeads, runBatch); // (rb, t+1)
        var query = LayerMath.ToCompute(projection.Query.narrow(0, rowStart, runRows), compute, device); // (R, g, d)
        var newKeys = LayerMath.ToCompute(projection.NewKey.narrow(1, rowStart, runRows), compute, device); // (1, R, d)
        var newValues = LayerMath.ToCompute(projection.NewValue.narrow(1, rowStart, runRows), compute, device); // (1, R, d)

        // Dense attention over a float32, bfloat16 or float16 cache in CPU memory: one pass of our kernel over each row's keys and
        // values as they are stored.
        if (attnSparsity >= 1.0 && parts.All(part => part.Value is not null) && CpuDecodeAttention.Available)
        {
            var cached = parts.Select(part => (part.Key.narrow(0, 0, past), part.Value!.narrow(0, 0, past))).ToArray(); // (t, r, d)
            if (CpuDecodeAttention.TryAttend(query, newKeys, newValues, mask, cached, kvHeads, compute.MaskValue) is { } values)
            {
                return values.MoveToOuterDisposeScope();
            }
        }

        var newKey = newKeys.permute(1, 2, 0); // (R, d, 1)
        var newValue = newValues.permute(1, 0, 2); // (R, 1, d)

        // (R, g, t + 1): cached positions, then the new token last.
        var pastScores = Concat(parts.Select(part =>
        {
            var keys = LayerMath.ToCompute(part.Key.narrow(0, 0, past), compute, device).permute(1, 2, 0); // (r, d, t)
            return torch.bmm(query.narrow(0, part.RowStart - rowStart, part.Rows), keys); // (r, g, t)
        }).ToArray());
        var scores = torch.cat([pastScores, torch.bmm(query, newKey)], 2)
            .view(runBatch, kvHeads, groups, srcLen)
            .masked_fill(mask.view(runBatch, 1, 1, srcLen).logical_not(), compute.MaskValue)
            .view(runRows, groups, srcLen);
        var probs = scores.softmax(2);
        var pastProbs = probs.narrow(2, 0, past); // (R, g, t)
        var newProb = probs.narrow(2, past, 1); // (R, g, 1)

        int topK = (int)(attnSparsity * past); // FlexGen: int(sparsity * (src_s - 1))
        var attended = Concat(parts.Select(part =>
        {
            var partProbs = pastProbs.narrow(0, part.RowStart - rowStart, part.Rows); // (r, g, t)
            if (part.ValueRows is { } valueRows)
            {
                return SparseFetchedValue(partProbs, valueRows, topK, compute, device);
            }

            var values = LayerMath.ToCompute(part.Value!.narrow(0, 0, past), compute, device).permute(1, 0, 2); // (r, t, d)
            return attnSparsity >= 1.0 ? torch.bmm(partProbs, values) : SparsePastValue(partProbs, values, topK);
        }).ToArray());

        var result = attended.add_(newProb.mul(newValue)); // (R, g, d)
        return result.MoveToOuterDisposeScope();
    }

    private static Tensor Concat(Tensor[] parts) => parts.Length == 1 ? parts[0] : torch.cat(parts, 0);

    private static void CheckSegment(SegmentRows part, long rows, long headDim, long past, int kvHeads, double attnSparsity)
    {
        LayerMath.CheckRank(part.Key, 3, "keyCache", "(seq, rows, head_dim)");
        if (part.Value is { } valueCache)
        {
            LayerMath.CheckRank(valueCache, 3, "valueCache", "(seq, rows, head_dim)");
            if (!part.Key.shape.SequenceEqual(valueCache.shape))
            {
                throw new ArgumentException(
                    $"valueCache shape ({string.Join(", ", valueCache.shape)}) differs from keyCache ({string.Join(", ", part.Key.shape)}).",
                    "valueCache");
            }
        }
        else if (part.ValueRows is null)
        {
            throw new ArgumentException("A cache segment needs its value cache or a value row fetcher; it has neither.", "valueCache");
        }
        else if (attnSparsity >= 1.0)
        {
            throw new ArgumentException("Fetching value rows by position needs attnSparsity < 1; dense attention reads the whole value cache.", nameof(attnSparsity));
        }

        long segRows = part.Rows;
        if (part.RowStart < 0 || part.RowStart % kvHeads != 0 || segRows % kvHeads != 0 || part.RowStart + segRows > rows)
        {
            throw new ArgumentException(
                $"Cache segment rows [{part.RowStart}, {part.RowStart + segRows}) must be whole sequences (multiples of n_head {kvHeads}, the KV heads per sequence) within batch * n_head = {rows}.",
                "keyCache");
        }

        if (part.Key.shape[2] != headDim)
        {
            throw new ArgumentException($"keyCache head_dim {part.Key.shape[2]} differs from the model's {headDim}.", "keyCache");
        }

        if (part.Key.shape[0] < past)
        {
            throw new ArgumentException(
                $"keyCache holds {part.Key.shape[0]} positions but the attention mask needs {past} cached positions.", "keyCache");
        }
    }

    /// <summary>
    /// FlexGen's sparse attention value over the cached positions: of <paramref name="pastProbs"/> (r, g, t) keep
    /// the <paramref name="topK"/> largest per query (softmax weights as computed over all positions, not
    /// renormalised) and sum those rows of <paramref name="values"/> (r, t, d). Returns (r, g, d).
    /// </summary>
    internal static Tensor SparsePastValue(Tensor pastProbs, Tensor values, int topK)
    {
        long groups = pastProbs.shape[1];
        if (groups > 1)
        {
            // Grouped queries: each query head of a row is a row of its own over the same values.
            using var grouped = NewDisposeScope();
            long r = values.shape[0], t = values.shape[1], d = values.shape[2];
            var perQuery = values.unsqueeze(1).expand(r, groups, t, d).reshape(r * groups, t, d);
            return SparsePastValue(pastProbs.reshape(r * groups, 1, t), perQuery, topK).view(r, groups, d)
                .MoveToOuterDisposeScope();
        }

        using var scope = NewDisposeScope();
        long rows = values.shape[0], headDim = values.shape[2];
        var (topProbs, topIndex) = pastProbs.topk(topK, dim: 2, largest: true, sorted: false); // (r, 1, k)
        var picked = values.gather(1, topIndex.view(rows, topK, 1).expand(rows, topK, headDim)); // (r, k, d)
        return torch.bmm(topProbs, picked).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="SparsePastValue"/> with the picked rows fetched by position: the same top-k of
    /// <paramref name="pastProbs"/> (r, g, t), then (k, r) positions to <paramref name="valueRows"/>, once per query
    /// column g. Returns (r, g, d).
    /// </summary>
    private static Tensor SparseFetchedValue(Tensor pastProbs, ValueRowFetcher valueRows, int topK, ComputeSettings compute, Device device)
    {
        long groups = pastProbs.shape[1];
        if (groups > 1)
        {
            using var grouped = NewDisposeScope();
            var parts = Enumerable.Range(0, (int)groups)
                .Select(g => SparseFetchedValue(pastProbs.narrow(1, g, 1), valueRows, topK, compute, device)).ToArray();
            return torch.cat(parts, 1).MoveToOuterDisposeScope();
        }

        using var scope = NewDisposeScope();
        long rows = pastProbs.shape[0];
        var (topProbs, topIndex) = pastProbs.topk(topK, dim: 2, largest: true, sorted: false); // (r, 1, k)
        var positions = topIndex.view(rows, topK).t().contiguous(); // (k, r): FlexGen's topk_indices layout
        using var fetched = valueRows(positions); // (k, r, d)
        if (fetched.dim() != 3 || fetched.shape[0] != topK || fetched.shape[1] != rows)
        {
            throw new InvalidOperationException(
                $"The value row fetcher returned ({string.Join(", ", fetched.shape)}) for ({topK}, {rows}) positions; expected ({topK}, {rows}, head_dim).");
        }

        // Contiguous (r, k, d) as the gather of SparsePastValue makes it, so bmm sees the same operands.
        var picked = LayerMath.ToCompute(fetched, compute, device).permute(1, 0, 2).contiguous();
        return torch.bmm(topProbs, picked).MoveToOuterDisposeScope();
    }
}
