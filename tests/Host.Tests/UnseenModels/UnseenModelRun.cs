namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>Prompts as an outsider makes them: BOS then random ids (never the pad id 1), left-padded to a width.</summary>
public sealed record PromptSet(string Name, int Width, int[] Lengths, ulong Seed = 11)
{
    public long[,] Ids(int vocab)
    {
        var random = new Random((int)Seed);
        var ids = new long[Lengths.Length, Width];
        for (int r = 0; r < Lengths.Length; r++)
        {
            int pad = Width - Lengths[r];
            for (int c = 0; c < Width; c++)
                ids[r, c] = c < pad ? 1 : c == pad ? 2 : random.Next(3, vocab);
        }
        return ids;
    }

    public override string ToString() => $"{Name} ({Lengths.Length} x {Width})";
}

/// <summary>An HF checkpoint converted with `flexgen convert`, its weights for the HF oracle, in a temp folder.</summary>
public sealed class ConvertedModel : ConvertedCheckpoint<OptShape>
{
    private ConvertedModel(OptShape shape, CheckpointLayout layout)
        : base(shape, layout)
    {
    }

    public static Task<ConvertedModel> CreateAsync(OptShape shape, CheckpointLayout layout, ulong seed = 5) =>
        ConvertAsync(new ConvertedModel(shape, layout), model => RandomOptCheckpoint.Write(model.HfFolder, shape, layout, seed));

    /// <summary>The plain reference generator (float32) on the converted weights.</summary>
    public long[,] Reference(long[,] ids, int genLen)
    {
        using var weights = OptWeights.Load(Folder);
        using var prompt = torch.tensor(Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]);
        using var result = ReferenceGenerator.Generate(weights, prompt, null, new GenerationSettings(genLen), new ReferenceRun(ComputeSettings.Float32));
        return ToMatrix(result.OutputIds);
    }

    /// <summary>
    /// The reference generator (float32) as a lossy policy computes: weights of two or more dimensions 4-bit
    /// group-quantized and back (FlexGen's compress_weight), decode attention top-k sparse, the cache in
    /// <paramref name="cacheDtype"/>.
    /// </summary>
    public long[,] LossyReference(long[,] ids, int genLen, bool compressWeight, double attnSparsity, torch.ScalarType? cacheDtype)
    {
        var config = OptConfig.FromHuggingFaceConfig(Folder);
        var byName = new Dictionary<string, torch.Tensor>();
        foreach (var spec in OptWeightSpecs.Layers(config, sepLayer: true).SelectMany(l => l.Weights))
        {
            if (byName.ContainsKey(spec.FileName)) continue;
            var tensor = NpyFile.Read(Path.Combine(Folder, spec.FileName));
            if (compressWeight && tensor.dim() >= 2)
            {
                using var stored = tensor;
                // Weights are quantized in float32 at load, as the product (and FlexLLMGen) does.
                using var quantized = GroupQuantizer.Compress(stored, CompressionConfig.DefaultWeight, QuantizationArithmetic.Float32);
                tensor = GroupQuantizer.Decompress(quantized);
            }
            byName[spec.FileName] = tensor;
        }
        using var weights = new OptWeights(config, byName);
        using var prompt = torch.tensor(Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]);
        using var result = ReferenceGenerator.Generate(weights, prompt, null,
            new GenerationSettings(genLen), new ReferenceRun(ComputeSettings.Float32) { AttnSparsity = attnSparsity, CacheDtype = cacheDtype });
        return ToMatrix(result.OutputIds);
    }

    /// <summary>Hugging Face's greedy tokens (plain float32 re-implementation on the checkpoint's own weights).</summary>
    public long[,] HuggingFace(long[,] ids, int genLen) => HfOptOracle.Greedy(HfWeights, Shape, ids, genLen);

    public static long[] Flatten(long[,] m)
    {
        var flat = new long[m.Length];
        Buffer.BlockCopy(m, 0, flat, 0, flat.Length * sizeof(long));
        return flat;
    }

    public static long[,] ToMatrix(torch.Tensor t)
    {
        using var longs = t.to_type(torch.ScalarType.Int64);
        var flat = longs.data<long>().ToArray();
        var m = new long[t.shape[0], t.shape[1]];
        Buffer.BlockCopy(flat, 0, m, 0, flat.Length * sizeof(long));
        return m;
    }

    /// <summary>Fraction of equal tokens.</summary>
    public static double Agreement(long[,] a, long[,] b)
    {
        var x = Flatten(a);
        var y = Flatten(b);
        return x.Zip(y).Count(p => p.First == p.Second) / (double)x.Length;
    }
}

/// <summary>The policies of policies.json; lossy ones (compression, sparsity) need not give the exact tokens.</summary>
public static class OutsiderPolicies
{
    public static IReadOnlyDictionary<string, Policy> All { get; } = FlexGenPolicyJson.Load(TestPaths.Fixture("policies.json"));

    public static bool IsLossy(Policy p) => p.CompressWeight || p.CompressCache || p.AttnSparsity < 1;
}
