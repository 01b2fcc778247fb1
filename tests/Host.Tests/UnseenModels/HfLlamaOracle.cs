namespace FlexGen.Host.Tests.UnseenModels;

using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>llama3 <c>rope_scaling</c> as config.json gives it.</summary>
public sealed record Llama3Rope(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);

/// <summary>
/// The shape of a Llama-family model (llama or qwen2) as its Hugging Face config.json describes it. Read by the
/// oracle straight from the JSON keys (<see cref="FromConfigJson"/>), not through FlexGen's config classes.
/// </summary>
public sealed record LlamaShape(string Name, string ModelType, int Hidden, int Heads, int KvHeads, int Layers, int Ffn, int Vocab, int MaxPositions)
{
    /// <summary>config.json's <c>head_dim</c>; null: the key is absent (head_dim = hidden / heads).</summary>
    public int? HeadDimKey { get; init; }

    public bool Tied { get; init; }

    /// <summary>config.json as transformers v5 writes it: rope_theta and the scaling inside one rope_parameters object, dtype for torch_dtype.</summary>
    public bool TransformersV5Config { get; init; }

    public double RopeTheta { get; init; } = 10000.0;

    public Llama3Rope? RopeScaling { get; init; }

    public double RmsNormEps { get; init; } = 1e-6;

    public int BosTokenId { get; init; } = 1;

    public int EosTokenId { get; init; } = 2;

    /// <summary>null: no pad_token_id key (the pad id is then the EOS id).</summary>
    public int? PadTokenIdKey { get; init; } = 0;

    public int PadTokenId => PadTokenIdKey ?? EosTokenId;

    public int HeadDim => HeadDimKey ?? Hidden / Heads;

    /// <summary>Llama's <c>attention_bias</c>: q, k, v and o projections have biases.</summary>
    public bool AttentionBias { get; init; }

    /// <summary>q/k/v projections have biases: Qwen2's (implied by the model type) or Llama's attention_bias.</summary>
    public bool QkvBias => ModelType == "qwen2" || AttentionBias;

    /// <summary>o_proj has a bias: Llama's attention_bias (never Qwen2).</summary>
    public bool OutBias => ModelType != "qwen2" && AttentionBias;

    /// <summary>Whether prompts start with BOS (Llama) or not (Qwen2).</summary>
    public bool PrependsBos => ModelType != "qwen2";

    public override string ToString() =>
        $"{Name} ({ModelType}, h {Hidden}, heads {Heads}/{KvHeads} kv x {HeadDim}{(HeadDimKey is null ? "" : " (head_dim key)")}, layers {Layers}, ffn {Ffn}, vocab {Vocab}, " +
        $"{(Tied ? "tied" : "untied")}{(AttentionBias ? ", attention_bias" : "")}{(TransformersV5Config ? ", v5 rope_parameters" : "")}, theta {RopeTheta}{(RopeScaling is { } r ? $", llama3 x{r.Factor} orig {r.OriginalMaxPositions}" : "")})";

    /// <summary>The shape of a config.json, read key by key as transformers does.</summary>
    public static LlamaShape FromConfigJson(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        int Int(string key) => root.GetProperty(key).GetInt32();
        bool Has(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;
        int heads = Int("num_attention_heads");
        Llama3Rope? scaling = null;
        var rope = Has("rope_scaling") ? root.GetProperty("rope_scaling") : Has("rope_parameters") ? root.GetProperty("rope_parameters") : default;
        double theta = Has("rope_theta") ? root.GetProperty("rope_theta").GetDouble()
            : rope.ValueKind == JsonValueKind.Object && rope.TryGetProperty("rope_theta", out var th) ? th.GetDouble() : 10000.0;
        if (rope.ValueKind == JsonValueKind.Object && rope.TryGetProperty("rope_type", out var type) && type.GetString() == "llama3")
        {
            var s = rope;
            scaling = new Llama3Rope(s.GetProperty("factor").GetDouble(), s.GetProperty("low_freq_factor").GetDouble(),
                s.GetProperty("high_freq_factor").GetDouble(), s.GetProperty("original_max_position_embeddings").GetInt32());
        }

        return new LlamaShape(Path.GetFileName(Path.GetDirectoryName(path)) ?? "model", root.GetProperty("model_type").GetString()!,
            Int("hidden_size"), heads, Has("num_key_value_heads") ? Int("num_key_value_heads") : heads, Int("num_hidden_layers"),
            Int("intermediate_size"), Int("vocab_size"), Int("max_position_embeddings"))
        {
            HeadDimKey = Has("head_dim") ? Int("head_dim") : null,
            Tied = Has("tie_word_embeddings") && root.GetProperty("tie_word_embeddings").GetBoolean(),
            AttentionBias = Has("attention_bias") && root.GetProperty("attention_bias").GetBoolean(),
            RopeTheta = theta,
            RopeScaling = scaling,
            RmsNormEps = Has("rms_norm_eps") ? root.GetProperty("rms_norm_eps").GetDouble() : 1e-6,
            BosTokenId = Has("bos_token_id") ? Int("bos_token_id") : 1,
            EosTokenId = Has("eos_token_id") ? Int("eos_token_id") : 2,
            PadTokenIdKey = Has("pad_token_id") ? Int("pad_token_id") : null,
        };
    }
}

/// <summary>
/// Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM greedy decoding written out plainly in float32, without a KV
/// cache (the whole sequence is recomputed each step), straight from the semantics in the llama-tiny fixture's README:
/// positions cumsum(mask) - 1 (pads at 1), RMSNorm, rotate-half RoPE (llama3 frequency scaling), q/k/v biases when
/// the checkpoint has them, repeat_kv grouped-query attention, causal + padding mask filled with float32's minimum,
/// softmax in float32, SwiGLU MLP, final norm, an untied lm_head or the tied token embedding. Independent of
/// FlexGen.Tensors' layer code.
/// </summary>
public static class HfLlamaOracle
{
    /// <summary>Tokens (n, gen_len) and, per step, the best minus the second-best logit (n, gen_len).</summary>
    public sealed record Result(long[,] Tokens, float[,] Top2Gap);

    /// <param name="weights">By Hugging Face name without "model." (lm_head.weight as is), float32.</param>
    /// <param name="promptIds">(n, s) left-padded.</param>
    /// <param name="promptMask">(n, s), true = real token.</param>
    public static Result Greedy(IReadOnlyDictionary<string, Tensor> weights, LlamaShape shape, long[,] promptIds, bool[,] promptMask, int genLen)
    {
        using var scope = NewDisposeScope();
        int n = promptIds.GetLength(0), s = promptIds.GetLength(1);
        var ids = tensor(Flat(promptIds), [n, s]);
        var mask = tensor(Flat(promptMask), [n, s]);
        var tokens = new long[n, genLen];
        var gaps = new float[n, genLen];
        for (int step = 0; step < genLen; step++)
        {
            using var stepScope = NewDisposeScope();
            var logits = LastLogits(weights, shape, ids, mask); // (n, vocab)
            var next = logits.argmax(1); // first index on ties
            var (top, _) = logits.topk(2, dim: 1);
            var nextIds = next.data<long>().ToArray();
            var top2 = top.data<float>().ToArray();
            for (int r = 0; r < n; r++)
            {
                tokens[r, step] = nextIds[r];
                gaps[r, step] = top2[2 * r] - top2[2 * r + 1];
            }
            // generate appends the new token as a real one (mask 1), whatever its id.
            ids = cat([ids, next.unsqueeze(1)], 1).MoveToOuterDisposeScope();
            mask = cat([mask, ones([n, 1], ScalarType.Bool)], 1).MoveToOuterDisposeScope();
        }
        return new Result(tokens, gaps);
    }

    /// <summary>RoPE's inverse frequencies in float32: 1 / theta^(2i/d), then llama3 scaling when given.</summary>
    public static float[] InverseFrequencies(LlamaShape shape)
    {
        int d = shape.HeadDim;
        using var exponent = arange(0, d, 2, ScalarType.Int64).to_type(ScalarType.Float32).div(d);
        using var powers = pow(tensor((float)shape.RopeTheta), exponent);
        using var inv = powers.reciprocal();
        var invFreq = inv.data<float>().ToArray();
        if (shape.RopeScaling is not { } r) return invFreq;
        double old = r.OriginalMaxPositions;
        double lowWavelen = old / r.LowFreqFactor, highWavelen = old / r.HighFreqFactor;
        var scaled = new float[invFreq.Length];
        for (int i = 0; i < invFreq.Length; i++)
        {
            float f = invFreq[i];
            float wavelen = (float)(2 * Math.PI) / f;
            if (wavelen < highWavelen) scaled[i] = f;
            else if (wavelen > lowWavelen) scaled[i] = (float)(f / r.Factor);
            else
            {
                double smooth = (old / wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor);
                scaled[i] = (float)((1 - smooth) * f / r.Factor + smooth * f);
            }
        }
        return scaled;
    }

    /// <summary>float32 logits (n, vocab) at the last position of (n, s) ids with mask (n, s).</summary>
    public static Tensor LastLogits(IReadOnlyDictionary<string, Tensor> w, LlamaShape shape, Tensor ids, Tensor mask)
    {
        using var scope = NewDisposeScope();
        long n = ids.shape[0], s = ids.shape[1];
        int h = shape.Hidden, heads = shape.Heads, kvHeads = shape.KvHeads, d = shape.HeadDim, groups = heads / kvHeads;

        var maskLong = mask.to_type(ScalarType.Int64);
        var positions = maskLong.cumsum(1).sub(1).masked_fill(maskLong.eq(0), 1); // (n, s)
        var invFreq = tensor(InverseFrequencies(shape)); // (d/2)
        var angle = positions.to_type(ScalarType.Float32).unsqueeze(-1).mul(invFreq); // (n, s, d/2)
        var emb = cat([angle, angle], -1); // (n, s, d)
        var cos = emb.cos().unsqueeze(1); // (n, 1, s, d)
        var sin = emb.sin().unsqueeze(1);

        var x = w["embed_tokens.weight"].index_select(0, ids.flatten()).view(n, s, h);
        var causal = ones([s, s], ScalarType.Bool).tril();
        var allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(mask.unsqueeze(1).unsqueeze(1)); // (n, 1, s, s)
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"layers.{l}.";
            var normed = RmsNorm(x, w[p + "input_layernorm.weight"], shape.RmsNormEps);
            var q = Linear(normed, w, p + "self_attn.q_proj").view(n, s, heads, d).transpose(1, 2); // (n, heads, s, d)
            var k = Linear(normed, w, p + "self_attn.k_proj").view(n, s, kvHeads, d).transpose(1, 2); // (n, kv, s, d)
            var v = Linear(normed, w, p + "self_attn.v_proj").view(n, s, kvHeads, d).transpose(1, 2);
            q = q.mul(cos).add(RotateHalf(q).mul(sin));
            k = k.mul(cos).add(RotateHalf(k).mul(sin));
            // repeat_kv: KV head j serves query heads j*groups .. j*groups + groups - 1.
            k = k.unsqueeze(2).expand(n, kvHeads, groups, s, d).reshape(n, heads, s, d);
            v = v.unsqueeze(2).expand(n, kvHeads, groups, s, d).reshape(n, heads, s, d);
            var scores = q.matmul(k.transpose(2, 3)).mul(Math.Pow(d, -0.5)).masked_fill(allowed.logical_not(), float.MinValue);
            var attended = scores.softmax(-1, ScalarType.Float32).matmul(v).transpose(1, 2).reshape(n, s, heads * d);
            x = x.add(Linear(attended, w, p + "self_attn.o_proj"));
            var mlpIn = RmsNorm(x, w[p + "post_attention_layernorm.weight"], shape.RmsNormEps);
            var gate = Linear(mlpIn, w, p + "mlp.gate_proj");
            x = x.add(Linear(gate.mul(gate.sigmoid()).mul(Linear(mlpIn, w, p + "mlp.up_proj")), w, p + "mlp.down_proj"));
        }
        var last = RmsNorm(x, w["norm.weight"], shape.RmsNormEps).select(1, s - 1); // (n, h)
        var head = shape.Tied ? w["embed_tokens.weight"] : w["lm_head.weight"];
        return last.matmul(head.t()).MoveToOuterDisposeScope(); // (n, vocab)
    }

    // [a, b] -> [-b, a], halves of the last dim.
    private static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
    }

    private static Tensor RmsNorm(Tensor x, Tensor weight, double eps)
    {
        var variance = x.pow(2).mean([-1L], keepdim: true);
        return x.mul(variance.add(eps).rsqrt()).mul(weight);
    }

    private static Tensor Linear(Tensor x, IReadOnlyDictionary<string, Tensor> w, string name) =>
        nn.functional.linear(x, w[name + ".weight"], w.TryGetValue(name + ".bias", out var bias) ? bias : null);

    private static long[] Flat(long[,] m)
    {
        var flat = new long[m.Length];
        Buffer.BlockCopy(m, 0, flat, 0, flat.Length * sizeof(long));
        return flat;
    }

    private static bool[] Flat(bool[,] m) => m.Cast<bool>().ToArray();
}
