namespace FlexGen.Host.Tests.UnseenModels;

using System.Globalization;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>
/// Prompts as an outsider makes them for a Llama-family model: BOS (Llama; not Qwen2) then random ids that are never
/// the pad, BOS or EOS id, left-padded with the pad id to a width.
/// </summary>
public sealed record LlamaPromptSet(string Name, int Width, int[] Lengths, ulong Seed = 11)
{
    public (long[,] Ids, bool[,] Mask) Make(LlamaShape shape)
    {
        var random = new Random((int)Seed);
        var ids = new long[Lengths.Length, Width];
        var mask = new bool[Lengths.Length, Width];
        var special = new HashSet<int> { shape.PadTokenId, shape.BosTokenId, shape.EosTokenId };
        for (int r = 0; r < Lengths.Length; r++)
        {
            int pad = Width - Lengths[r];
            for (int c = 0; c < Width; c++)
            {
                mask[r, c] = c >= pad;
                if (c < pad) ids[r, c] = shape.PadTokenId;
                else if (c == pad && shape.PrependsBos) ids[r, c] = shape.BosTokenId;
                else
                {
                    int id;
                    do id = random.Next(0, shape.Vocab); while (special.Contains(id));
                    ids[r, c] = id;
                }
            }
        }
        return (ids, mask);
    }

    public override string ToString() => $"{Name} ({Lengths.Length} x {Width})";
}

/// <summary>A random Hugging Face Llama-family checkpoint converted with `flexgen convert`, its weights for the oracle, in a temp folder.</summary>
public sealed class ConvertedLlamaModel : IDisposable
{
    private readonly TempFolder _folder = new();
    private readonly Dictionary<(LlamaPromptSet, int), HfLlamaOracle.Result> _oracle = [];

    private ConvertedLlamaModel(LlamaShape shape, CheckpointLayout layout) => (Shape, Layout) = (shape, layout);

    public LlamaShape Shape { get; }

    public CheckpointLayout Layout { get; }

    public string Folder => _folder.File("flexgen");

    public string HfFolder => _folder.File("hf");

    public Dictionary<string, torch.Tensor> HfWeights { get; private set; } = [];

    /// <summary>`flexgen convert`'s output.</summary>
    public string ConvertOutput { get; private set; } = "";

    public static async Task<ConvertedLlamaModel> CreateAsync(LlamaShape shape, CheckpointLayout layout, ulong seed = 7)
    {
        var model = new ConvertedLlamaModel(shape, layout);
        try
        {
            model.HfWeights = RandomLlamaCheckpoint.Write(model.HfFolder, shape, layout, seed);
            var convert = await CliRunner.RunAsync("convert", model.HfFolder, model.Folder);
            if (convert.ExitCode != 0) throw new InvalidOperationException($"convert failed for {shape}:\n{convert}");
            model.ConvertOutput = convert.Output;
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Hugging Face's greedy tokens and top-2 gaps (the plain float32 oracle on the checkpoint's own weights), computed once per prompt set.</summary>
    public HfLlamaOracle.Result HuggingFace(LlamaPromptSet prompts, int genLen)
    {
        lock (_oracle)
        {
            if (!_oracle.TryGetValue((prompts, genLen), out var result))
            {
                var (ids, mask) = prompts.Make(Shape);
                _oracle[(prompts, genLen)] = result = HfLlamaOracle.Greedy(HfWeights, Shape, ids, mask, genLen);
            }
            return result;
        }
    }

    /// <summary>
    /// `flexgen generate --model out --input-ids ids.npy --output-ids out.npy --compute-dtype float32` plus the policy's
    /// flags. Checks the output file is int64 (n, gen_len); returns it, or the CLI result when it failed.
    /// </summary>
    public async Task<(long[,]? Tokens, CliRunner.CliResult Result)> GenerateAsync(long[,] ids, Policy policy, int genLen)
    {
        string run = _folder.File("run-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(run);
        string input = Path.Combine(run, "ids.npy"), output = Path.Combine(run, "out.npy");
        using (var tensor = torch.tensor(ConvertedModel.Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]))
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

    /// <summary>
    /// Compares <paramref name="actual"/> with the oracle's tokens row by row, up to (not including) the first step whose
    /// oracle top-2 gap is below <paramref name="tolerance"/> (a near-tie the float16 KV cache may flip legitimately;
    /// after it the sequences may differ). Returns the mismatches (empty when equal) and how many tokens were compared.
    /// </summary>
    public static (List<string> Mismatches, int Compared) Compare(HfLlamaOracle.Result oracle, long[,] actual, double tolerance)
    {
        var mismatches = new List<string>();
        int compared = 0;
        for (int r = 0; r < oracle.Tokens.GetLength(0); r++)
        {
            for (int t = 0; t < oracle.Tokens.GetLength(1); t++)
            {
                if (oracle.Top2Gap[r, t] < tolerance) break;
                compared++;
                if (oracle.Tokens[r, t] != actual[r, t])
                {
                    mismatches.Add($"row {r} step {t}: HF {oracle.Tokens[r, t]} (gap {oracle.Top2Gap[r, t]:G3}), got {actual[r, t]}; " +
                        $"HF row [{string.Join(", ", Fixture.Row(oracle.Tokens, r))}], got [{string.Join(", ", Fixture.Row(actual, r))}]");
                    break;
                }
            }
        }
        return (mismatches, compared);
    }

    public void Dispose()
    {
        foreach (var t in HfWeights.Values) t.Dispose();
        _folder.Dispose();
    }
}
