namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using System.Text.Json;
using FlexGen.Host.Checkpoints;
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
        var stored = new List<KeyValuePair<string, torch.Tensor>>();
        try
        {
            foreach (var (name, value) in weights)
                stored.Add(new((layout.ModelPrefix ? "model." : "") + name, value.to_type(layout.Dtype)));
            if (layout.TiedLmHead) stored.Add(new("lm_head.weight", weights["decoder.embed_tokens.weight"].to_type(layout.Dtype)));
            if (layout.Shards <= 1)
            {
                SafetensorsWriter.Write(Path.Combine(folder, SafetensorsCheckpoint.SingleFileName), stored,
                    new Dictionary<string, string> { ["format"] = "pt" });
                return weights;
            }
            var map = new Dictionary<string, string>();
            int per = (stored.Count + layout.Shards - 1) / layout.Shards;
            for (int s = 0; s < layout.Shards; s++)
            {
                string shard = $"model-{s + 1:D5}-of-{layout.Shards:D5}.safetensors";
                var part = stored.Skip(s * per).Take(per).ToList();
                SafetensorsWriter.Write(Path.Combine(folder, shard), part, new Dictionary<string, string> { ["format"] = "pt" });
                foreach (var t in part) map[t.Key] = shard;
            }
            SafetensorsWriter.WriteIndex(Path.Combine(folder, SafetensorsCheckpoint.IndexFileName), map,
                stored.Sum(t => t.Value.numel() * t.Value.element_size()));
            return weights;
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in stored) t.Value.Dispose();
        }
    }

    private static Dictionary<string, torch.Tensor> MakeWeights(OptShape shape, ulong seed, torch.ScalarType? rounding)
    {
        using var generator = new torch.Generator(seed);
        var weights = new Dictionary<string, torch.Tensor>(StringComparer.Ordinal);
        int h = shape.Hidden;
        // Scales that keep attention non-uniform and logits well separated (no greedy near-ties).
        void Add(string name, long[] dims, double std, double mean = 0)
        {
            using var raw = torch.randn(dims, torch.ScalarType.Float32, generator: generator);
            using var scaled = raw.mul(std).add(mean);
            if (rounding is { } dtype)
            {
                using var rounded = scaled.to_type(dtype);
                weights[name] = rounded.to_type(torch.ScalarType.Float32);
            }
            else weights[name] = scaled.clone();
        }
        Add("decoder.embed_tokens.weight", [shape.Vocab, h], 0.5);
        Add("decoder.embed_positions.weight", [shape.MaxPositions + 2, h], 0.5);
        double linear = 1.0 / Math.Sqrt(h);
        for (int l = 0; l < shape.Layers; l++)
        {
            string p = $"decoder.layers.{l}.";
            foreach (var proj in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
            {
                Add(p + $"self_attn.{proj}.weight", [h, h], 1.5 * linear);
                Add(p + $"self_attn.{proj}.bias", [h], 0.1);
            }
            Add(p + "self_attn_layer_norm.weight", [h], 0.2, 1);
            Add(p + "self_attn_layer_norm.bias", [h], 0.1);
            Add(p + "fc1.weight", [shape.Ffn, h], linear);
            Add(p + "fc1.bias", [shape.Ffn], 0.1);
            Add(p + "fc2.weight", [h, shape.Ffn], 1.0 / Math.Sqrt(shape.Ffn));
            Add(p + "fc2.bias", [h], 0.1);
            Add(p + "final_layer_norm.weight", [h], 0.2, 1);
            Add(p + "final_layer_norm.bias", [h], 0.1);
        }
        Add("decoder.final_layer_norm.weight", [h], 0.2, 1);
        Add("decoder.final_layer_norm.bias", [h], 0.1);
        return weights;
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
