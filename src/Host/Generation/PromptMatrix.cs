namespace FlexGen.Host.Generation;

/// <summary>Prompts of different lengths as one (n, prompt_len) matrix, as FlexGen feeds them.</summary>
public static class PromptMatrix
{
    /// <summary>Left-pads every prompt with <paramref name="padId"/> to the longest one: row r ends with prompt r.</summary>
    public static long[,] LeftPad(IReadOnlyList<IReadOnlyList<long>> prompts, long padId)
    {
        int len = prompts.Max(p => p.Count);
        var ids = new long[prompts.Count, len];
        for (int r = 0; r < prompts.Count; r++)
        {
            int offset = len - prompts[r].Count;
            for (int c = 0; c < len; c++) ids[r, c] = c < offset ? padId : prompts[r][c - offset];
        }
        return ids;
    }
}
