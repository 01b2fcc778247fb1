namespace FlexGen.Host.Generation;

/// <summary>
/// Stop strings (any text, not only one token): the generated text is cut where the first stop string begins, and the
/// tokens after the one that completes it are dropped. Post-processing where the text exists (the host); the engine
/// may have generated on to gen_len.
/// </summary>
public static class StopStrings
{
    /// <summary>A sequence after the cut.</summary>
    /// <param name="Ids">The tokens up to and including the one that completed the stop string (all when none matched).</param>
    /// <param name="Text">The text before the stop string (all of it when none matched).</param>
    /// <param name="Stopped">Whether a stop string matched.</param>
    public sealed record Cut(IReadOnlyList<long> Ids, string Text, bool Stopped);

    /// <summary>Cuts <paramref name="ids"/> at the first of <paramref name="stops"/> in their text.</summary>
    /// <param name="decode">Text of a run of token ids (the model's tokenizer).</param>
    public static Cut Apply(IReadOnlyList<long> ids, IReadOnlyList<string> stops, Func<IReadOnlyList<long>, string> decode)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(stops);
        ArgumentNullException.ThrowIfNull(decode);
        if (stops.Any(string.IsNullOrEmpty)) throw new ArgumentException("A stop string must not be empty.", nameof(stops));
        string full = decode(ids);
        if (stops.Count == 0 || First(full, stops) < 0) return new Cut(ids, full, false);
        // The shortest prefix whose text holds a stop string: its last token completes it.
        for (int k = 1; k <= ids.Count; k++)
        {
            var prefix = ids.Take(k).ToArray();
            string text = decode(prefix);
            int at = First(text, stops);
            if (at >= 0) return new Cut(prefix, text[..at], true);
        }
        // Only the whole decodes to a stop string (a prefix never does): keep every token.
        return new Cut(ids, full[..First(full, stops)], true);
    }

    /// <summary>Where the earliest stop string begins in <paramref name="text"/>; -1 when none occurs.</summary>
    public static int First(string text, IReadOnlyList<string> stops)
    {
        int first = -1;
        foreach (string stop in stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first < 0 || at < first)) first = at;
        }
        return first;
    }

    /// <summary>
    /// A whole batch cut row by row, as the CLI prints and writes it: the dropped positions hold <paramref name="padId"/>
    /// (as after a stop token), the texts end before the stop string.
    /// </summary>
    public static BatchGeneration Apply(BatchGeneration batch, IReadOnlyList<string> stops, Func<IReadOnlyList<long>, string> decode, long padId)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (stops.Count == 0) return batch;
        int rows = batch.OutputIds.GetLength(0), cols = batch.OutputIds.GetLength(1);
        var ids = (long[,])batch.OutputIds.Clone();
        var texts = new string[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = Enumerable.Range(0, cols).Select(c => batch.OutputIds[r, c]).ToArray();
            var cut = Apply(row, stops, decode);
            for (int c = cut.Ids.Count; c < cols; c++) ids[r, c] = padId;
            texts[r] = cut.Text;
        }
        return batch with { OutputIds = ids, Texts = texts };
    }
}
