namespace FlexGen.Host.Tests.UnseenModels;

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
public sealed class ConvertedLlamaModel : ConvertedCheckpoint<LlamaShape>
{
    private readonly Dictionary<(LlamaPromptSet, int), HfLlamaOracle.Result> _oracle = [];

    private ConvertedLlamaModel(LlamaShape shape, CheckpointLayout layout)
        : base(shape, layout)
    {
    }

    public static Task<ConvertedLlamaModel> CreateAsync(LlamaShape shape, CheckpointLayout layout, ulong seed = 7) =>
        ConvertAsync(new ConvertedLlamaModel(shape, layout), model => RandomLlamaCheckpoint.Write(model.HfFolder, shape, layout, seed));

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
}
