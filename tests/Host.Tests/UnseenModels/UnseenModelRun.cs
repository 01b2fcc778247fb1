namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using System.Globalization;
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
public sealed class ConvertedModel : IDisposable
{
    private readonly TempFolder _folder = new();

    private ConvertedModel(OptShape shape, CheckpointLayout layout) => (Shape, Layout) = (shape, layout);

    public OptShape Shape { get; }

    public CheckpointLayout Layout { get; }

    public string Folder => _folder.File("flexgen");

    public string HfFolder => _folder.File("hf");

    public Dictionary<string, torch.Tensor> HfWeights { get; private set; } = [];

    public string Scratch(string name) => _folder.File(name);

    public static async Task<ConvertedModel> CreateAsync(OptShape shape, CheckpointLayout layout, ulong seed = 5)
    {
        var model = new ConvertedModel(shape, layout);
        try
        {
            model.HfWeights = RandomOptCheckpoint.Write(model.HfFolder, shape, layout, seed);
            var convert = await CliRunner.RunAsync("convert", model.HfFolder, model.Folder);
            if (convert.ExitCode != 0) throw new InvalidOperationException($"convert failed for {shape}:\n{convert}");
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

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

    /// <summary>
    /// `flexgen generate --model out --input-ids ids.npy --output-ids out.npy --compute-dtype float32` plus the policy's
    /// flags. Checks the output file is int64 (n, gen_len); returns it, or the CLI result when it failed.
    /// </summary>
    public async Task<(long[,]? Tokens, CliRunner.CliResult Result)> GenerateAsync(long[,] ids, Policy policy, int genLen,
        torch.ScalarType inputDtype = torch.ScalarType.Int64)
    {
        string run = Scratch("run-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(run);
        string input = Path.Combine(run, "ids.npy"), output = Path.Combine(run, "out.npy");
        using (var tensor = torch.tensor(Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]).to_type(inputDtype))
            NpyFile.Write(input, tensor);
        var result = await CliRunner.RunAsync([
            "generate", "--model", Folder, "--input-ids", input, "--output-ids", output, "--compute-dtype", "float32",
            "--gen-len", genLen.ToString(CultureInfo.InvariantCulture), "--trace", "", "--offload-dir", Path.Combine(run, "offload"),
            .. PolicyMatrixTests.Flags(policy)]);
        if (result.ExitCode != 0) return (null, result);
        var header = NpyFile.ReadHeader(output);
        if (header.DType != torch.ScalarType.Int64 || !header.Shape.SequenceEqual([ids.GetLength(0), (long)genLen]))
            throw new InvalidOperationException(
                $"output ids: {header.Descr} ({string.Join(", ", header.Shape)}), expected int64 ({ids.GetLength(0)}, {genLen})");
        var tokens = Fixture.ReadInt64Matrix(output);
        Directory.Delete(run, recursive: true);
        return (tokens, result);
    }

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

    public void Dispose()
    {
        foreach (var t in HfWeights.Values) t.Dispose();
        _folder.Dispose();
    }
}

/// <summary>The policies of policies.json; lossy ones (compression, sparsity) need not give the exact tokens.</summary>
public static class OutsiderPolicies
{
    public static IReadOnlyDictionary<string, Policy> All { get; } = FlexGenPolicyJson.Load(TestPaths.Fixture("policies.json"));

    public static bool IsLossy(Policy p) => p.CompressWeight || p.CompressCache || p.AttnSparsity < 1;
}
