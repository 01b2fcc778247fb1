namespace FlexGen.Host.Tests.UnseenModels;

using System.Text.Json;
using TorchSharp;

/// <summary>
/// Writes a Hugging Face Llama or Qwen2 folder nobody has seen before: config.json (as transformers' save_pretrained
/// writes it for the model type) and model.safetensors (or shards + index) of seeded random weights under their
/// Hugging Face names (<c>model.layers.N.self_attn.q_proj.weight</c>, ...; no <c>lm_head.weight</c> when tied; Qwen2's
/// q/k/v biases). Values are rounded to the stored dtype and are float16-representable, so that Hugging Face's float32
/// run and the converted float16 FlexGen weights describe the same model.
/// </summary>
public static class RandomLlamaCheckpoint
{
    /// <summary>Writes the folder; returns the weights by Hugging Face name without "model.", float32, owned by the caller.</summary>
    public static Dictionary<string, torch.Tensor> Write(string folder, LlamaShape shape, CheckpointLayout layout, ulong seed)
    {
        Directory.CreateDirectory(folder);
        WriteConfig(Path.Combine(folder, "config.json"), shape, layout.Dtype);
        var rounding = layout.Dtype == torch.ScalarType.BFloat16 ? torch.ScalarType.BFloat16 : torch.ScalarType.Float16;
        var weights = MakeWeights(shape, seed, rounding);
        return RandomCheckpoint.WriteSafetensors(folder, weights, layout.Shards, weights.Select(w => KeyValuePair.Create(
            w.Key == "lm_head.weight" || !layout.ModelPrefix ? w.Key : "model." + w.Key, w.Value.to_type(layout.Dtype))));
    }

    private static Dictionary<string, torch.Tensor> MakeWeights(LlamaShape shape, ulong seed, torch.ScalarType rounding)
    {
        using var random = new SeededWeights(seed, rounding);
        int h = shape.Hidden, q = shape.Heads * shape.HeadDim, kv = shape.KvHeads * shape.HeadDim;
        // Scales that keep attention non-uniform and the logits separated (few greedy near-ties). A tied head scores the
        // last hidden state against the embeddings: a small embedding keeps it from repeating the input token.
        random.Add("embed_tokens.weight", [shape.Vocab, h], shape.Tied ? 0.1 : 1.0);
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"layers.{l}.";
            random.Add(p + "self_attn.q_proj.weight", [q, h], 2.0 / Math.Sqrt(h));
            if (shape.QkvBias) random.Add(p + "self_attn.q_proj.bias", [q], 0.5);
            random.Add(p + "self_attn.k_proj.weight", [kv, h], 2.0 / Math.Sqrt(h));
            if (shape.QkvBias) random.Add(p + "self_attn.k_proj.bias", [kv], 0.5);
            random.Add(p + "self_attn.v_proj.weight", [kv, h], 1.0 / Math.Sqrt(h));
            if (shape.QkvBias) random.Add(p + "self_attn.v_proj.bias", [kv], 0.5);
            random.Add(p + "self_attn.o_proj.weight", [h, q], 1.0 / Math.Sqrt(q));
            if (shape.OutBias) random.Add(p + "self_attn.o_proj.bias", [h], 0.5);
            random.Add(p + "mlp.gate_proj.weight", [shape.Ffn, h], 1.0 / Math.Sqrt(h));
            random.Add(p + "mlp.up_proj.weight", [shape.Ffn, h], 1.0 / Math.Sqrt(h));
            random.Add(p + "mlp.down_proj.weight", [h, shape.Ffn], 1.0 / Math.Sqrt(shape.Ffn));
            random.Add(p + "input_layernorm.weight", [h], 0.1, 1);
            random.Add(p + "post_attention_layernorm.weight", [h], 0.1, 1);
        }
        random.Add("norm.weight", [h], 0.1, 1);
        if (!shape.Tied) random.Add("lm_head.weight", [shape.Vocab, h], 0.5);
        return random.ByName;
    }

    private static void WriteConfig(string path, LlamaShape shape, torch.ScalarType dtype)
    {
        string torchDtype = dtype switch { torch.ScalarType.Float32 => "float32", torch.ScalarType.BFloat16 => "bfloat16", _ => "float16" };
        var config = new Dictionary<string, object?>
        {
            ["_name_or_path"] = "outsider/" + shape.Name,
            ["architectures"] = new[] { shape.ModelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM" },
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = shape.BosTokenId,
            ["eos_token_id"] = shape.EosTokenId,
            ["hidden_act"] = "silu",
            ["hidden_size"] = shape.Hidden,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = shape.Ffn,
            ["max_position_embeddings"] = shape.MaxPositions,
            ["model_type"] = shape.ModelType,
            ["num_attention_heads"] = shape.Heads,
            ["num_hidden_layers"] = shape.Layers,
            ["num_key_value_heads"] = shape.KvHeads,
            ["rms_norm_eps"] = shape.RmsNormEps,
            ["rope_theta"] = shape.RopeTheta,
            ["tie_word_embeddings"] = shape.Tied,
            ["torch_dtype"] = torchDtype,
            ["transformers_version"] = "4.46.0",
            ["use_cache"] = true,
            ["vocab_size"] = shape.Vocab,
        };
        if (shape.PadTokenIdKey is { } pad) config["pad_token_id"] = pad;
        if (shape.ModelType == "qwen2")
        {
            // Qwen2's config: no attention_bias, head_dim, rope_scaling or pad_token_id keys in the published files.
            config["max_window_layers"] = shape.Layers;
            config["sliding_window"] = shape.MaxPositions;
            config["use_sliding_window"] = false;
            config["rope_scaling"] = null;
        }
        else
        {
            config["attention_bias"] = shape.AttentionBias;
            config["mlp_bias"] = false;
            config["pretraining_tp"] = 1;
            if (shape.HeadDimKey is { } headDim) config["head_dim"] = headDim;
            config["rope_scaling"] = shape.RopeScaling is { } r
                ? new Dictionary<string, object>
                {
                    ["factor"] = r.Factor,
                    ["low_freq_factor"] = r.LowFreqFactor,
                    ["high_freq_factor"] = r.HighFreqFactor,
                    ["original_max_position_embeddings"] = r.OriginalMaxPositions,
                    ["rope_type"] = "llama3",
                }
                : null;
        }
        if (shape.TransformersV5Config)
        {
            var rope = new Dictionary<string, object> { ["rope_theta"] = shape.RopeTheta, ["rope_type"] = "default" };
            if (shape.RopeScaling is { } r)
            {
                rope["rope_type"] = "llama3";
                rope["factor"] = r.Factor;
                rope["low_freq_factor"] = r.LowFreqFactor;
                rope["high_freq_factor"] = r.HighFreqFactor;
                rope["original_max_position_embeddings"] = r.OriginalMaxPositions;
            }
            config.Remove("rope_theta");
            config.Remove("rope_scaling");
            config["rope_parameters"] = rope;
            config["dtype"] = config["torch_dtype"];
            config.Remove("torch_dtype");
            config["transformers_version"] = "5.0.0";
        }
        File.WriteAllText(path, JsonSerializer.Serialize(config, new JsonSerializerOptions { WriteIndented = true }));
    }
}
