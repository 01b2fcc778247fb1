namespace FlexGen.Host.Tests;

using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using FlexGen.Host.Checkpoints;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>
/// Builds a Hugging Face style OPT checkpoint folder from the bundled opt-tiny weights: config.json and
/// model.safetensors (or shards with an index) with HF parameter names (model.decoder.*, final_layer_norm).
/// </summary>
public static class HfCheckpointBuilder
{
    public sealed record Options(bool ModelPrefix = true, bool LmHead = false, bool UntiedLmHead = false, int Shards = 1,
        torch.ScalarType Dtype = torch.ScalarType.Float16);

    /// <summary>Rewrites a safetensors file's JSON header in place, keeping its data section as it is.</summary>
    public static void EditHeader(string path, Action<JsonObject> edit)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int length = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        var header = (JsonObject)JsonNode.Parse(bytes.AsSpan(8, length))!;
        edit(header);
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var stream = File.Create(path);
        var lengthBytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)json.Length);
        stream.Write(lengthBytes);
        stream.Write(json);
        stream.Write(bytes.AsSpan(8 + length));
    }

    /// <summary>Rewrites the weight map of a sharded checkpoint's index.</summary>
    public static void EditWeightMap(string folder, Action<JsonObject> edit)
    {
        string path = Path.Combine(folder, SafetensorsCheckpoint.IndexFileName);
        var index = JsonNode.Parse(File.ReadAllText(path))!;
        edit(index["weight_map"]!.AsObject());
        File.WriteAllText(path, index.ToJsonString());
    }

    public static void Build(string folder, Options? options = null)
    {
        options ??= new Options();
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(TestPaths.BundledModel, "config.json"), Path.Combine(folder, "config.json"), overwrite: true);
        var tensors = new List<KeyValuePair<string, torch.Tensor>>();
        try
        {
            foreach (var file in Directory.GetFiles(TestPaths.BundledModel).Where(f => Path.GetFileName(f) != "config.json").Order())
            {
                string flexName = Path.GetFileName(file);
                string hfName = flexName.StartsWith("decoder.layer_norm.", StringComparison.Ordinal)
                    ? "decoder.final_layer_norm." + flexName["decoder.layer_norm.".Length..]
                    : flexName;
                if (options.ModelPrefix) hfName = "model." + hfName;
                using var half = NpyFile.Read(file);
                tensors.Add(new(hfName, half.to_type(options.Dtype)));
            }
            if (options.LmHead)
            {
                var embed = tensors.First(t => t.Key.EndsWith("decoder.embed_tokens.weight", StringComparison.Ordinal)).Value;
                var head = options.UntiedLmHead ? embed.add(1) : embed.clone();
                tensors.Add(new("lm_head.weight", head));
            }
            if (options.Shards <= 1)
            {
                SafetensorsWriter.Write(Path.Combine(folder, SafetensorsCheckpoint.SingleFileName), tensors);
                return;
            }
            var map = new Dictionary<string, string>();
            int per = (tensors.Count + options.Shards - 1) / options.Shards;
            for (int s = 0; s < options.Shards; s++)
            {
                string shard = $"model-{s + 1:D5}-of-{options.Shards:D5}.safetensors";
                var part = tensors.Skip(s * per).Take(per).ToList();
                SafetensorsWriter.Write(Path.Combine(folder, shard), part);
                foreach (var t in part) map[t.Key] = shard;
            }
            SafetensorsWriter.WriteIndex(Path.Combine(folder, SafetensorsCheckpoint.IndexFileName), map,
                tensors.Sum(t => t.Value.numel() * t.Value.element_size()));
        }
        finally
        {
            foreach (var t in tensors) t.Value.Dispose();
        }
    }
}
