namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Hugging Face's OPTForCausalLM greedy decoding written out plainly in float32, without a KV cache (the whole
/// sequence is recomputed each step): positions from the attention mask's cumsum (+2 offset), pre-layer-norm
/// blocks, q scaled by head_dim^-0.5 after its bias, causal + padding mask filled with float32's minimum, ReLU MLP,
/// final layer norm, logits = h @ embed_tokens^T. An oracle independent of FlexGen.Tensors' layer code.
/// </summary>
public static class HfOptOracle
{
    /// <param name="weights">By Hugging Face name without "model.", float32.</param>
    /// <param name="promptIds">(n, s) left-padded with pad id 1; the mask is ids != 1, as FlexGen derives it.</param>
    public static long[,] Greedy(IReadOnlyDictionary<string, Tensor> weights, OptShape shape, long[,] promptIds, int genLen)
    {
        using var scope = NewDisposeScope();
        int n = promptIds.GetLength(0), s = promptIds.GetLength(1);
        var flat = new long[promptIds.Length];
        Buffer.BlockCopy(promptIds, 0, flat, 0, flat.Length * sizeof(long));
        var ids = tensor(flat, [n, s]);
        var mask = ids.ne(1);
        var output = new long[n, genLen];
        for (int step = 0; step < genLen; step++)
        {
            using var stepScope = NewDisposeScope();
            var next = LastLogits(weights, shape, ids, mask).argmax(1); // (n)
            var values = next.data<long>().ToArray();
            for (int r = 0; r < n; r++) output[r, step] = values[r];
            ids = cat([ids, next.unsqueeze(1)], 1).MoveToOuterDisposeScope();
            mask = cat([mask, ones([n, 1], ScalarType.Bool)], 1).MoveToOuterDisposeScope();
        }
        return output;
    }

    private static Tensor LastLogits(IReadOnlyDictionary<string, Tensor> w, OptShape shape, Tensor ids, Tensor mask)
    {
        long n = ids.shape[0], s = ids.shape[1];
        int h = shape.Hidden, heads = shape.Heads, hd = h / heads;
        var maskLong = mask.to_type(ScalarType.Int64);
        var positions = maskLong.cumsum(1).mul(maskLong).sub(1).add(2); // (n, s)
        var x = w["decoder.embed_tokens.weight"].index_select(0, ids.flatten()).view(n, s, h)
            .add(w["decoder.embed_positions.weight"].index_select(0, positions.flatten()).view(n, s, h));
        var causal = ones([s, s], ScalarType.Bool).tril();
        var allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(mask.unsqueeze(1).unsqueeze(1)); // (n, 1, s, s)
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"decoder.layers.{l}.";
            var normed = LayerNorm(x, w, p + "self_attn_layer_norm", h);
            Tensor Heads(Tensor t) => t.view(n, s, heads, hd).transpose(1, 2); // (n, heads, s, hd)
            var q = Heads(Linear(normed, w, p + "self_attn.q_proj").mul(Math.Pow(hd, -0.5)));
            var k = Heads(Linear(normed, w, p + "self_attn.k_proj"));
            var v = Heads(Linear(normed, w, p + "self_attn.v_proj"));
            var scores = q.matmul(k.transpose(2, 3)).masked_fill(allowed.logical_not(), float.MinValue);
            var attended = scores.softmax(-1).matmul(v).transpose(1, 2).reshape(n, s, h);
            x = x.add(Linear(attended, w, p + "self_attn.out_proj"));
            var mlpIn = LayerNorm(x, w, p + "final_layer_norm", h);
            x = x.add(Linear(Linear(mlpIn, w, p + "fc1").relu(), w, p + "fc2"));
        }
        var last = LayerNorm(x, w, "decoder.final_layer_norm", h).select(1, s - 1); // (n, h)
        return last.matmul(w["decoder.embed_tokens.weight"].t()); // (n, vocab)
    }

    private static Tensor Linear(Tensor x, IReadOnlyDictionary<string, Tensor> w, string name) =>
        nn.functional.linear(x, w[name + ".weight"], w[name + ".bias"]);

    private static Tensor LayerNorm(Tensor x, IReadOnlyDictionary<string, Tensor> w, string name, int h) =>
        nn.functional.layer_norm(x, [h], w[name + ".weight"], w[name + ".bias"], 1e-5);
}
