namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Npy;

/// <summary>The opt-tiny fixture as plain arrays.</summary>
public static class Fixture
{
    public static long[,] ReadInt64Matrix(string path)
    {
        using var tensor = NpyFile.Read(path);
        var flat = tensor.data<long>().ToArray();
        var matrix = new long[tensor.shape[0], tensor.shape[1]];
        Buffer.BlockCopy(flat, 0, matrix, 0, flat.Length * sizeof(long));
        return matrix;
    }

    public static long[,] PromptIds => ReadInt64Matrix(TestPaths.Fixture("prompt_ids.npy"));

    public static long[,] HfTokens => ReadInt64Matrix(TestPaths.Fixture("hf_fp32_tokens.npy"));

    public static long[] Row(long[,] m, int r) => Enumerable.Range(0, m.GetLength(1)).Select(c => m[r, c]).ToArray();

    /// <summary>Row r of the prompts without its left padding (pad id 1).</summary>
    public static long[] UnpaddedPrompt(int r) => Row(PromptIds, r).SkipWhile(id => id == 1).ToArray();
}
