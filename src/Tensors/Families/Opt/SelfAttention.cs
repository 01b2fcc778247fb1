namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// OPT self-attention (FlexGen's <c>mha</c> / <c>mha_gen</c>): pre-layer-norm, q/k/v projections (q scaled by
/// head_dim^-0.5), attention with the causal and padding mask, out projection, residual add. KV-cache tensors
/// use FlexGen's layout (seq, batch * n_head, head_dim), row <c>b * n_head + head</c>.
/// </summary>
public static class SelfAttention
{
    /// <summary>
    /// Prefill: attention over the prompt. <paramref name="hidden"/> (batch, s, h), <paramref name="attentionMask"/>
    /// (batch, s), nonzero/true = real token. Returns the new hidden states and the cache entries for positions
    /// [0, s) in the compute dtype (the caller stores them, converting to the cache dtype).
    /// </summary>
    public static AttentionOutput Prefill(
        Tensor hidden, Tensor attentionMask, SelfAttentionWeights weights, int nHead, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        long b = hidden.shape[0], s = hidden.shape[1], h = hidden.shape[2];
        long headDim = HeadDim(h, nHead);

        using var scope = NewDisposeScope();
        var mask = LayerMath.MaskAsBool(attentionMask, b, device);
        if (mask.shape[1] != s)
        {
            throw new ArgumentException(
                $"Prefill attentionMask must cover the {s} prompt positions, got {mask.shape[1]}.", nameof(attentionMask));
        }

        var x = LayerMath.ToCompute(hidden, compute, device);
        var normed = LayerMath.LayerNorm(x, weights.LayerNormWeight, weights.LayerNormBias, weights.LayerNormEps, compute);
        var q = LayerMath.Linear(normed, weights.QWeight, weights.QBias, compute).mul_(Scaling(headDim)); // (b, s, h)
        var k = LayerMath.Linear(normed, weights.KWeight, weights.KBias, compute);
        var v = LayerMath.Linear(normed, weights.VWeight, weights.VBias, compute);

        var q4 = q.view(b, s, nHead, headDim).permute(0, 2, 1, 3).reshape(b * nHead, s, headDim); // (b*n, s, d)
        var kT = k.view(b, s, nHead, headDim).permute(0, 2, 3, 1).reshape(b * nHead, headDim, s); // (b*n, d, s)
        var v4 = v.view(b, s, nHead, headDim).permute(0, 2, 1, 3).reshape(b * nHead, s, headDim); // (b*n, s, d)

        // Scores, softmax and values in the attention dtype (float32 on the CPU, as decode's), projections in the compute dtype.
        var attention = SegmentAttention.AttentionCompute(compute, device);
        var scores = torch.bmm(q4.to(attention.Dtype), kT.to(attention.Dtype)).view(b, nHead, s, s);
        var idx = torch.arange(s, device: device);
        var causal = idx.le(idx.view(s, 1)).view(1, 1, s, s); // key <= query
        var allowed = mask.view(b, 1, 1, s).logical_and(causal); // (b, 1, s, s)
        scores = scores.masked_fill(allowed.logical_not(), attention.MaskValue);
        var probs = scores.view(b * nHead, s, s).softmax(2);

        var value = torch.bmm(probs, v4.to(attention.Dtype)).to(compute.Dtype)
            .view(b, nHead, s, headDim).transpose(1, 2).reshape(b, s, h); // (b, s, h)
        var output = LayerMath.AddResidual(LayerMath.Linear(value, weights.OutWeight, weights.OutBias, compute), x); // (b, s, h)

        var newKey = kT.permute(2, 0, 1).contiguous(); // (s, b*n, d)
        var newValue = v4.permute(1, 0, 2).contiguous(); // (s, b*n, d)
        scope.MoveToOuter(output, newKey, newValue);
        return new AttentionOutput(output, newKey, newValue);
    }

    /// <summary>
    /// Decode, whole cache in one place: attention of the new token over the cache positions [0, t) plus itself,
    /// where t = attention mask length - 1. <paramref name="hidden"/> (batch, 1, h); <paramref name="attentionMask"/>
    /// (batch, t + 1); <paramref name="keyCache"/>/<paramref name="valueCache"/> (>= t, batch * n_head, head_dim) in
    /// any dtype, on any device (they are read, never written). <paramref name="attnSparsity"/> &lt; 1 keeps only
    /// the top-k cached positions per row (FlexGen's sparse attention). Returns the new hidden and the new token's
    /// cache entries (1, batch * n_head, head_dim) for the caller to store at position t.
    /// </summary>
    public static AttentionOutput Decode(
        Tensor hidden, Tensor attentionMask, SelfAttentionWeights weights, int nHead,
        Tensor keyCache, Tensor valueCache, ComputeSettings compute, double attnSparsity = 1.0) =>
        DecodeSegmented(hidden, attentionMask, weights, nHead, [new CacheSegment(keyCache, valueCache, compute)],
            compute, attnSparsity);

    /// <summary>
    /// Decode over a cache split along dim 1 into consecutive segments (FlexGen's mixed-device attention); each
    /// segment is computed where its tensors live, in its own dtype, and the results are concatenated. The same
    /// as <see cref="ProjectDecode"/>, <see cref="SegmentAttention.AttendAll"/>, <see cref="FinishDecode"/>, which a
    /// caller uses instead to run the GPU part and the CPU part separately.
    /// </summary>
    public static AttentionOutput DecodeSegmented(
        Tensor hidden, Tensor attentionMask, SelfAttentionWeights weights, int nHead,
        IReadOnlyList<CacheSegment> segments, ComputeSettings compute, double attnSparsity = 1.0)
    {
        ArgumentNullException.ThrowIfNull(segments);
        using var scope = NewDisposeScope();
        var projection = ProjectDecode(hidden, weights, nHead, compute);
        var values = SegmentAttention.AttendAll(projection, attentionMask, segments, nHead, attnSparsity);
        var output = FinishDecode(values, hidden, weights, compute);
        scope.MoveToOuter(output, projection.NewKey, projection.NewValue);
        return new AttentionOutput(output, projection.NewKey, projection.NewValue);
    }

    /// <summary>
    /// Decode, first part: layer norm and q/k/v projections of the new token (batch, 1, h), on its device, in the
    /// compute dtype.
    /// </summary>
    public static DecodeProjection ProjectDecode(
        Tensor hidden, SelfAttentionWeights weights, int nHead, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        long b = hidden.shape[0], s = hidden.shape[1], h = hidden.shape[2];
        if (s != 1)
        {
            throw new ArgumentException($"Decode takes one new token per sequence, got hidden seq length {s}.", nameof(hidden));
        }

        long headDim = HeadDim(h, nHead);
        using var scope = NewDisposeScope();
        var x = LayerMath.ToCompute(hidden, compute, device);
        var normed = LayerMath.LayerNorm(x, weights.LayerNormWeight, weights.LayerNormBias, weights.LayerNormEps, compute);
        var q = LayerMath.Linear(normed, weights.QWeight, weights.QBias, compute).mul_(Scaling(headDim)); // (b, 1, h)
        var k = LayerMath.Linear(normed, weights.KWeight, weights.KBias, compute);
        var v = LayerMath.Linear(normed, weights.VWeight, weights.VBias, compute);

        var query = q.reshape(b * nHead, 1, headDim); // (b*n, 1, d): row b * n_head + head
        var newKey = k.reshape(1, b * nHead, headDim); // (1, b*n, d)
        var newValue = v.reshape(1, b * nHead, headDim);
        scope.MoveToOuter(query, newKey, newValue);
        return new DecodeProjection(query, newKey, newValue);
    }

    /// <summary>
    /// Decode, last part: the segments' attention values (in row order, each (rows, 1, head_dim), anywhere) are
    /// concatenated on the device of <paramref name="hidden"/>, projected and added to the residual. Returns
    /// (batch, 1, h) in the compute dtype.
    /// </summary>
    public static Tensor FinishDecode(
        IReadOnlyList<Tensor> segmentValues, Tensor hidden, SelfAttentionWeights weights, ComputeSettings compute)
    {
        ArgumentNullException.ThrowIfNull(segmentValues);
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        long b = hidden.shape[0], h = hidden.shape[2];
        if (segmentValues.Count == 0)
        {
            throw new ArgumentException("FinishDecode needs at least one segment value.", nameof(segmentValues));
        }

        using var scope = NewDisposeScope();
        var parts = segmentValues.Select(v => LayerMath.ToCompute(v, compute, device)).ToArray();
        var value = parts.Length == 1 ? parts[0] : torch.cat(parts, 0); // (b*n, 1, d)
        if (value.shape[0] * value.shape[2] != b * h)
        {
            throw new ArgumentException(
                $"Segment values hold {value.shape[0]} rows of {value.shape[2]}; the batch needs {b} x {h} values.", nameof(segmentValues));
        }

        long nHead = value.shape[0] / b;
        var merged = value.view(b, nHead, 1, h / nHead).transpose(1, 2).reshape(b, 1, h);
        var x = LayerMath.ToCompute(hidden, compute, device);
        var output = LayerMath.AddResidual(LayerMath.Linear(merged, weights.OutWeight, weights.OutBias, compute), x);
        return output.MoveToOuterDisposeScope();
    }

    private static long HeadDim(long hidden, int nHead)
    {
        if (nHead < 1 || hidden % nHead != 0)
        {
            throw new ArgumentException($"nHead {nHead} must be positive and divide the hidden size {hidden}.", nameof(nHead));
        }

        return hidden / nHead;
    }

    private static double Scaling(long headDim) => Math.Pow(headDim, -0.5);
}
