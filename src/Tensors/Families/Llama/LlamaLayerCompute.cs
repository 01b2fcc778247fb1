using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FlexGen.Tensors.Families.Llama;

/// <summary>
/// The Llama family's layer math behind the engine's seam, as Hugging Face's <c>LlamaForCausalLM</c> computes it:
/// RMSNorm in float32, rotary positions (rotate-half layout, optional llama3 scaling) with positions from the attention
/// mask (<c>cumsum(mask) - 1</c>, pads at 1), grouped-query attention whose KV cache holds the KV heads only (cache row
/// <c>b * kv_heads + kv_head</c>; query head h reads KV head <c>h / groups</c>), a SwiGLU MLP, and the output head.
/// Weight lists are in <see cref="LlamaWeightSpecs"/> order.
/// </summary>
public sealed class LlamaLayerCompute : ILayerCompute
{
    private readonly LlamaConfig _config;
    private readonly float[] _invFreq;

    public LlamaLayerCompute(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        _config = config;
        _invFreq = InverseFrequencies(config);
    }

    /// <summary>
    /// RoPE's inverse frequencies in float32, as Hugging Face computes them: <c>1 / theta^(2i/d)</c>, then llama3
    /// scaling when the config has it.
    /// </summary>
    public static float[] InverseFrequencies(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        using var scope = NewDisposeScope();
        long d = config.HeadDim;
        var exponent = torch.arange(0, d, 2, ScalarType.Int64).to(ScalarType.Float32).div(d);
        var invFreq = torch.full_like(exponent, config.RopeTheta).pow(exponent).reciprocal();
        if (config.RopeScaling is { } s)
        {
            double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor;
            double highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
            var wavelen = invFreq.reciprocal().mul(2 * Math.PI);
            var scaled = torch.where(wavelen.gt(lowWavelen), invFreq.div(s.Factor), invFreq);
            var smooth = wavelen.reciprocal().mul((double)s.OriginalMaxPositions).sub(s.LowFreqFactor)
                .div(s.HighFreqFactor - s.LowFreqFactor);
            var smoothed = smooth.neg().add(1.0).mul(scaled).div(s.Factor).add(smooth.mul(scaled));
            var medium = wavelen.lt(highWavelen).logical_not().logical_and(wavelen.gt(lowWavelen).logical_not());
            invFreq = torch.where(medium, smoothed, scaled);
        }

        return invFreq.data<float>().ToArray();
    }

    /// <summary>Positions of a left-padded mask (batch, total): <c>cumsum(mask) - 1</c>, pads set to 1 (as Hugging Face's generate).</summary>
    public static Tensor Positions(Tensor attentionMask)
    {
        LayerMath.CheckRank(attentionMask, 2, nameof(attentionMask), "(batch, total_seq)");
        using var scope = NewDisposeScope();
        var mask = attentionMask.ne(0).to(ScalarType.Int64);
        return mask.cumsum(1).sub(1).masked_fill(mask.eq(0), 1).MoveToOuterDisposeScope();
    }

    public Tensor Embed(Tensor tokenIds, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute)
    {
        LayerMath.CheckRank(tokenIds, 2, nameof(tokenIds), "(batch, new_seq)");
        CheckCount(weights, 1, "input embedding");
        ArgumentNullException.ThrowIfNull(compute);
        var device = tokenIds.device;
        compute.EnsureSupportedOn(device);
        long batch = tokenIds.shape[0], newSeq = tokenIds.shape[1];
        using var scope = NewDisposeScope();
        var table = weights[0];
        // Only the rows travel and get converted.
        var rows = table.index_select(0, tokenIds.to(ScalarType.Int64).reshape(-1).to(table.device));
        return LayerMath.ToCompute(rows, compute, device).view(batch, newSeq, table.shape[1]).MoveToOuterDisposeScope();
    }

    public AttentionOutput Prefill(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        var w = Attention(weights);
        long b = hidden.shape[0], s = hidden.shape[1];
        long n = _config.NHead, kv = _config.NumKeyValueHeads, g = _config.Groups, d = _config.HeadDim;

        using var scope = NewDisposeScope();
        var mask = LayerMath.MaskAsBool(attentionMask, b, device);
        if (mask.shape[1] != s)
            throw new ArgumentException($"Prefill attentionMask must cover the {s} prompt positions, got {mask.shape[1]}.", nameof(attentionMask));

        var x = LayerMath.ToCompute(hidden, compute, device);
        var normed = RmsNorm(x, w.Norm, compute);
        var (cos, sin) = CosSin(Positions(attentionMask).to(device), compute); // (b, s, d)
        var q = Rotate(LayerMath.Linear(normed, w.Q, w.QBias, compute).view(b, s, n, d).transpose(1, 2), cos, sin)
            .mul(Scaling); // (b, n, s, d)
        var k = Rotate(LayerMath.Linear(normed, w.K, w.KBias, compute).view(b, s, kv, d).transpose(1, 2), cos, sin); // (b, kv, s, d)
        var v = LayerMath.Linear(normed, w.V, w.VBias, compute).view(b, s, kv, d).transpose(1, 2); // (b, kv, s, d)

        // Scores, softmax and values in the attention dtype (float32 on the CPU, as decode's), projections in the compute dtype.
        var attention = SegmentAttention.AttentionCompute(compute, device);
        var keys = k.reshape(b * kv, s, d).to(attention.Dtype);
        var values = v.reshape(b * kv, s, d).to(attention.Dtype);
        var scores = torch.bmm(q.reshape(b * kv, g * s, d).to(attention.Dtype), keys.transpose(1, 2)).view(b, kv, g, s, s);
        var idx = torch.arange(s, device: device);
        var causal = idx.le(idx.view(s, 1)).view(1, 1, 1, s, s); // key <= query
        var allowed = mask.view(b, 1, 1, 1, s).logical_and(causal);
        scores = scores.masked_fill(allowed.logical_not(), attention.MaskValue);
        var probs = Softmax(scores, attention).view(b * kv, g * s, s);
        var attended = torch.bmm(probs, values).to(compute.Dtype).view(b, n, s, d).transpose(1, 2).reshape(b, s, n * d);
        var output = LayerMath.AddResidual(LayerMath.Linear(attended, w.O, w.OBias, compute), x);

        var newKey = k.permute(2, 0, 1, 3).reshape(s, b * kv, d).contiguous(); // (s, b*kv, d)
        var newValue = v.permute(2, 0, 1, 3).reshape(s, b * kv, d).contiguous();
        scope.MoveToOuter(output, newKey, newValue);
        return new AttentionOutput(output, newKey, newValue);
    }

    public AttentionOutput Decode(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights,
        IReadOnlyList<CacheSegment> segments, ComputeSettings compute, double attnSparsity)
    {
        ArgumentNullException.ThrowIfNull(segments);
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        var w = Attention(weights);
        long b = hidden.shape[0], s = hidden.shape[1];
        if (s != 1)
            throw new ArgumentException($"Decode takes one new token per sequence, got hidden seq length {s}.", nameof(hidden));
        long n = _config.NHead, kv = _config.NumKeyValueHeads, g = _config.Groups, d = _config.HeadDim;

        using var scope = NewDisposeScope();
        var x = LayerMath.ToCompute(hidden, compute, device);
        var normed = RmsNorm(x, w.Norm, compute);
        var position = Positions(attentionMask).to(device).narrow(1, attentionMask.shape[1] - 1, 1); // (b, 1)
        var (cos, sin) = CosSin(position, compute);
        var q = Rotate(LayerMath.Linear(normed, w.Q, w.QBias, compute).view(b, 1, n, d).transpose(1, 2), cos, sin).mul(Scaling);
        var k = Rotate(LayerMath.Linear(normed, w.K, w.KBias, compute).view(b, 1, kv, d).transpose(1, 2), cos, sin);
        var v = LayerMath.Linear(normed, w.V, w.VBias, compute).view(b, 1, kv, d);

        // One cache row per (sequence, KV head); its query heads are the row's g query columns.
        var projection = new DecodeProjection(q.reshape(b * kv, g, d), k.reshape(1, b * kv, d), v.reshape(1, b * kv, d));
        var parts = SegmentAttention.AttendAll(projection, attentionMask, segments, (int)kv, attnSparsity)
            .Select(p => LayerMath.ToCompute(p, compute, device)).ToArray();
        var value = (parts.Length == 1 ? parts[0] : torch.cat(parts, 0)).reshape(b, 1, n * d);
        var output = LayerMath.AddResidual(LayerMath.Linear(value, w.O, w.OBias, compute), x);
        scope.MoveToOuter(output, projection.NewKey, projection.NewValue);
        return new AttentionOutput(output, projection.NewKey, projection.NewValue);
    }

    public Tensor Mlp(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        CheckCount(weights, 4, "MLP");
        using var scope = NewDisposeScope();
        var x = LayerMath.ToCompute(hidden, compute, device);
        var normed = RmsNorm(x, weights[3], compute);
        var gate = nn.functional.silu(LayerMath.Linear(normed, weights[0], null, compute));
        var inner = gate.mul_(LayerMath.Linear(normed, weights[1], null, compute));
        return LayerMath.AddResidual(LayerMath.Linear(inner, weights[2], null, compute), x).MoveToOuterDisposeScope();
    }

    /// <summary>Logits of the last position: (batch, seq, h) -> (batch, vocab) in the compute dtype.</summary>
    public Tensor Logits(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);
        CheckCount(weights, 2, "output embedding");
        using var scope = NewDisposeScope();
        var last = LayerMath.ToCompute(hidden.select(1, hidden.shape[1] - 1), compute, device); // (b, h)
        return LayerMath.VocabLogits(RmsNorm(last, weights[0], compute), weights[1], compute).MoveToOuterDisposeScope();
    }

    private double Scaling => Math.Pow(_config.HeadDim, -0.5);

    // Hugging Face's LlamaRMSNorm: in float32, back to the input dtype, times the weight.
    private Tensor RmsNorm(Tensor x, Tensor weight, ComputeSettings compute)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        var variance = xf.pow(2).mean([-1L], keepdim: true);
        var y = xf.mul(variance.add(_config.RmsNormEps).rsqrt()).to(x.dtype);
        return y.mul(LayerMath.ToCompute(weight, compute, x.device)).MoveToOuterDisposeScope();
    }

    // Softmax in float32 (as Hugging Face), back to the compute dtype.
    private static Tensor Softmax(Tensor scores, ComputeSettings compute) =>
        scores.dtype == ScalarType.Float32
            ? scores.softmax(-1)
            : scores.to(ScalarType.Float32).softmax(-1).to(compute.Dtype);

    // cos and sin (b, s, d) of positions (b, s): angles in float32, [angle, angle], cast to the compute dtype.
    private (Tensor Cos, Tensor Sin) CosSin(Tensor positions, ComputeSettings compute)
    {
        var invFreq = torch.tensor(_invFreq, device: positions.device); // (d/2)
        var angle = positions.to(ScalarType.Float32).unsqueeze(-1).mul(invFreq); // (b, s, d/2)
        var emb = torch.cat([angle, angle], -1);
        return (emb.cos().to(compute.Dtype), emb.sin().to(compute.Dtype));
    }

    // x (b, heads, s, d): x * cos + rotate_half(x) * sin, rotate_half([a, b]) = [-b, a].
    private static Tensor Rotate(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var rotated = torch.cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
        return x.mul(cos.unsqueeze(1)).add(rotated.mul(sin.unsqueeze(1)));
    }

    private sealed record AttentionWeights(
        Tensor Q, Tensor? QBias, Tensor K, Tensor? KBias, Tensor V, Tensor? VBias, Tensor O, Tensor? OBias, Tensor Norm);

    private AttentionWeights Attention(IReadOnlyList<Tensor> weights)
    {
        bool qkv = _config.QkvBias, o = _config.OutBias;
        CheckCount(weights, 5 + (qkv ? 3 : 0) + (o ? 1 : 0), "attention");
        int i = 0;
        Tensor Next() => weights[i++];
        Tensor? Bias(bool has) => has ? weights[i++] : null;
        var q = Next();
        var qb = Bias(qkv);
        var k = Next();
        var kb = Bias(qkv);
        var v = Next();
        var vb = Bias(qkv);
        var ow = Next();
        var ob = Bias(o);
        return new AttentionWeights(q, qb, k, kb, v, vb, ow, ob, Next());
    }

    private void CheckCount(IReadOnlyList<Tensor> weights, int count, string layer)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (weights.Count != count)
            throw new ArgumentException(
                $"The {layer} layer of {_config.Name} takes {count} tensors in LlamaWeightSpecs order, got {weights.Count}.", nameof(weights));
    }
}
