namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Host.Checkpoints;
using TorchSharp;

/// <summary>
/// What the random Hugging Face checkpoints of every family share: seeded normal weights rounded through a dtype, and
/// the safetensors file (or shards + index) they are stored in.
/// </summary>
public static class RandomCheckpoint
{
    /// <summary>
    /// Writes <paramref name="stored"/> (the weights under their checkpoint names, in the checkpoint dtype; each tensor is
    /// disposed once written) to <paramref name="folder"/>: one model.safetensors, or <paramref name="shards"/> shards and
    /// their index. Returns <paramref name="weights"/>, or disposes them when writing fails.
    /// </summary>
    public static Dictionary<string, torch.Tensor> WriteSafetensors(string folder, Dictionary<string, torch.Tensor> weights, int shards,
        IEnumerable<KeyValuePair<string, torch.Tensor>> stored)
    {
        var written = new List<KeyValuePair<string, torch.Tensor>>();
        try
        {
            written.AddRange(stored);
            var metadata = new Dictionary<string, string> { ["format"] = "pt" };
            if (shards <= 1)
            {
                SafetensorsWriter.Write(Path.Combine(folder, SafetensorsCheckpoint.SingleFileName), written, metadata);
                return weights;
            }
            var map = new Dictionary<string, string>();
            int per = (written.Count + shards - 1) / shards;
            for (int s = 0; s < shards; s++)
            {
                string shard = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
                var part = written.Skip(s * per).Take(per).ToList();
                SafetensorsWriter.Write(Path.Combine(folder, shard), part, metadata);
                foreach (var t in part) map[t.Key] = shard;
            }
            SafetensorsWriter.WriteIndex(Path.Combine(folder, SafetensorsCheckpoint.IndexFileName), map,
                written.Sum(t => t.Value.numel() * t.Value.element_size()));
            return weights;
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in written) t.Value.Dispose();
        }
    }
}

/// <summary>
/// Seeded normal weights by Hugging Face name, float32, drawn in the order they are added; rounded through
/// <paramref name="rounding"/> (when given) so that they hold the same values in the checkpoint and in FlexGen's files.
/// </summary>
public sealed class SeededWeights(ulong seed, torch.ScalarType? rounding) : IDisposable
{
    private readonly torch.Generator _generator = new(seed);

    /// <summary>The weights added, owned by the caller.</summary>
    public Dictionary<string, torch.Tensor> ByName { get; } = new(StringComparer.Ordinal);

    public void Add(string name, long[] dims, double std, double mean = 0)
    {
        using var raw = torch.randn(dims, torch.ScalarType.Float32, generator: _generator);
        using var scaled = raw.mul(std).add(mean);
        if (rounding is { } dtype)
        {
            using var rounded = scaled.to_type(dtype);
            ByName[name] = rounded.to_type(torch.ScalarType.Float32);
        }
        else ByName[name] = scaled.clone();
    }

    public void Dispose() => _generator.Dispose();
}
