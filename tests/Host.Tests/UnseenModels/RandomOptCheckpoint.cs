namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using System.Text.Json;
using TorchSharp;

/// <summary>The shape of a made-up OPT model, as a Hugging Face config.json describes it.</summary>
public sealed record OptShape(string Name, int Hidden, int Heads, int Layers, int Ffn, int Vocab, int MaxPositions)
{
    public override string ToString() => $"{Name} (h {Hidden}, heads {Heads} x {Hidden / Heads}, layers {Layers}, ffn {Ffn}, vocab {Vocab}, max_pos {MaxPositions})";
}

/// <summary>How the checkpoint is stored: tensor name prefix, lm_head, shards, dtype.</summary>
public sealed record CheckpointLayout(bool ModelPrefix = true, bool TiedLmHead = false, int Shards = 1,
    torch.ScalarType Dtype = torch.ScalarType.Float16, bool Float16Exact = true);

/// <summary>
/// Writes a Hugging Face OPT folder nobody has seen before: config.json (as transformers' save_pretrained writes it)
/// and model.safetensors (or shards + index) of seeded random weights. The values are float16-representable unless
/// <see cref="CheckpointLayout.Float16Exact"/> is false, so that HF's float32 run and the converted float16 FlexGen
/// weights describe the same model.
/// </summary>
public static class RandomOptCheckpoint
{
    /// <summary>Writes the folder; returns the weights by Hugging Face name (without "model."), float32, owned by the caller.</summary>
    public static Dictionary<string, torch.Tensor> Write(string folder, OptShape shape, CheckpointLayout layout, ulong seed)
    {
        Directory.CreateDirectory(folder);
        WriteConfig(Path.Combine(folder, "config.json"), shape, layout.Dtype);
        // Round to what both the checkpoint and FlexGen's float16 files hold exactly (bfloat16 values fit float16).
        torch.ScalarType? rounding = !layout.Float16Exact ? null
            : layout.Dtype == torch.ScalarType.BFloat16 ? torch.ScalarType.BFloat16 : torch.ScalarType.Float16;
        var weights = MakeWeights(shape, seed, rounding);
        return RandomCheckpoint.WriteSafetensors(folder, weights, layout.Shards, Stored());

        IEnumerable<KeyValuePair<string, torch.Tensor>> Stored()
        {
            foreach (var (name, value) in weights)
                yield return new((layout.ModelPrefix ? "model." : "") + name, value.to_type(layout.Dtype));
            if (layout.TiedLmHead) yield return new("lm_head.weight", weights["decoder.embed_tokens.weight"].to_type(layout.Dtype));
        }
    }

    private static Dictionary<string, torch.Tensor> MakeWeights(OptShape shape, ulong seed, torch.ScalarType? rounding)
    {
        using var random = new SeededWeights(seed, rounding);
        int h = shape.Hidden;
        // Scales that keep attention non-uniform and logits well separated (no greedy near-ties).
        random.Add("decoder.embed_tokens.weight", [shape.Vocab, h], 0.5);
        random.Add("decoder.embed_positions.weight", [shape.MaxPositions + 2, h], 0.5);
        double linear = 1.0 / Math.Sqrt(h);
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"decoder.layers.{l}.";
            foreach (var proj in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
            {
                random.Add(p + $"self_attn.{proj}.weight", [h, h], 1.5 * linear);
                random.Add(p + $"self_attn.{proj}.bias", [h], 0.1);
            }
            random.Add(p + "self_attn_layer_norm.weight", [h], 0.2, 1);
            random.Add(p + "self_attn_layer_norm.bias", [h], 0.1);
            random.Add(p + "fc1.weight", [shape.Ffn, h], linear);
            random.Add(p + "fc1.bias", [shape.Ffn], 0.1);
            random.Add(p + "fc2.weight", [h, shape.Ffn], 1.0 / Math.Sqrt(shape.Ffn));
            random.Add(p + "fc2.bias", [h], 0.1);
            random.Add(p + "final_layer_norm.weight", [h], 0.2, 1);
            random.Add(p + "final_layer_norm.bias", [h], 0.1);
        }
        random.Add("decoder.final_layer_norm.weight", [h], 0.2, 1);
        random.Add("decoder.final_layer_norm.bias", [h], 0.1);
        return random.ByName;
    }

    private static void WriteConfig(string path, OptShape shape, torch.ScalarType dtype)
    {
        var config = new Dictionary<string, object>
        {
            ["_name_or_path"] = "outsider/" + shape.Name,
            ["_remove_final_layer_norm"] = false,
            ["activation_dropout"] = 0.0,
            ["activation_function"] = "relu",
            ["architectures"] = new[] { "OPTForCausalLM" },
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = 2,
            ["do_layer_norm_before"] = true,
            ["dropout"] = 0.1,
            ["enable_bias"] = true,
            ["eos_token_id"] = 2,
            ["ffn_dim"] = shape.Ffn,
            ["hidden_size"] = shape.Hidden,
            ["init_std"] = 0.02,
            ["layer_norm_elementwise_affine"] = true,
            ["layerdrop"] = 0.0,
            ["max_position_embeddings"] = shape.MaxPositions,
            ["model_type"] = "opt",
            ["num_attention_heads"] = shape.Heads,
            ["num_hidden_layers"] = shape.Layers,
            ["pad_token_id"] = 1,
            ["prefix"] = "</s>",
            ["torch_dtype"] = dtype switch { torch.ScalarType.Float32 => "float32", torch.ScalarType.BFloat16 => "bfloat16", _ => "float16" },
            ["transformers_version"] = "4.46.0",
            ["use_cache"] = true,
            ["vocab_size"] = shape.Vocab,
            ["word_embed_proj_dim"] = shape.Hidden,
        };
        File.WriteAllText(path, JsonSerializer.Serialize(config, new JsonSerializerOptions { WriteIndented = true }));
    }
}
