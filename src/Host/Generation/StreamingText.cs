namespace FlexGen.Host.Generation;

/// <summary>
/// One sequence's text as its tokens arrive, for streaming: each token gets the text it adds, except text that could
/// be the start of a stop string (or an incomplete character, U+FFFD at the end), which is held back until the next
/// tokens tell (as OpenAI does). Ends at a stop token (not included), at the token that completes a stop string (the
/// text cut before it), or at the end of the sequence: the same tokens and text as
/// <see cref="StopStrings.Apply(IReadOnlyList{long}, IReadOnlyList{string}, Func{IReadOnlyList{long}, string})"/>
/// after the stop-token cut.
/// </summary>
/// <param name="decode">Text of a run of token ids; null: no tokenizer (every piece of text is empty).</param>
public sealed class StreamingText(IReadOnlyList<string> stops, int? stopTokenId, Func<IReadOnlyList<long>, string>? decode)
{
    private readonly List<long> _ids = new();
    private string _text = "";
    private int _sent;

    /// <summary>The tokens kept so far (the stop token excluded).</summary>
    public IReadOnlyList<long> Ids => _ids;

    /// <summary>"stop" or "length" once ended; null while tokens may come.</summary>
    public string? FinishReason { get; private set; }

    /// <summary>
    /// Takes the next token. Returns null when it is not part of the completion (a stop token, or the sequence had
    /// ended); else the text to send with it (possibly empty).
    /// </summary>
    public string? Add(long id)
    {
        if (FinishReason is not null) return null;
        if (id == stopTokenId)
        {
            FinishReason = "stop";
            return null;
        }
        _ids.Add(id);
        if (decode is null) return "";
        string text = decode(_ids);
        int end;
        int at = StopStrings.First(text, stops);
        if (at >= 0)
        {
            FinishReason = "stop";
            text = text[..at];
            end = text.Length;
        }
        else
        {
            end = text.Length - HeldBack(text);
        }
        // Decoding more tokens may only change the incomplete end; never resend what went out.
        string piece = end > _sent && text.AsSpan(0, _sent).SequenceEqual(_text.AsSpan(0, _sent)) ? text[_sent..end] : "";
        _sent += piece.Length;
        _text = text;
        return piece;
    }

    /// <summary>Ends the sequence ("length" unless it stopped); returns the text held back (to send with the finish reason).</summary>
    public string End()
    {
        FinishReason ??= "length";
        string rest = _text.Length > _sent ? _text[_sent..] : "";
        _sent = _text.Length;
        return rest;
    }

    /// <summary>Characters at the end of <paramref name="text"/> that may begin a stop string or an unfinished character.</summary>
    private int HeldBack(string text)
    {
        int held = 0;
        while (held < text.Length && text[text.Length - 1 - held] == '\uFFFD') held++;
        foreach (string stop in stops)
        {
            for (int k = Math.Min(stop.Length - 1, text.Length); k > held; k--)
            {
                if (text.AsSpan(text.Length - k).SequenceEqual(stop.AsSpan(0, k)))
                {
                    held = k;
                    break;
                }
            }
        }
        return held;
    }
}
