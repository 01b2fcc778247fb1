namespace FlexGen.Host.Tests;

using FlexGen.Host.Generation;

public class StreamingTextTests
{
    // One character per token id: 'a' + id.
    private static string Decode(IReadOnlyList<long> ids) => new(ids.Select(i => (char)('a' + i)).ToArray());

    private static (List<string> Pieces, string Tail, StreamingText Text) Run(long[] ids, string[] stops, int? stopToken = null)
    {
        var text = new StreamingText(stops, stopToken, Decode);
        var pieces = new List<string>();
        foreach (long id in ids)
        {
            if (text.FinishReason is not null) break;
            if (text.Add(id) is { } piece) pieces.Add(piece);
        }
        return (pieces, text.End(), text);
    }

    [Fact]
    public void Text_that_could_begin_a_stop_string_should_be_held_back_until_the_next_tokens_tell()
    {
        // "abx" with stop "xyz": "x" is held back; "xb" is not the stop: sent.
        var (pieces, rest, text) = Run([0, 1, 23, 1], ["xyz"]);
        Assert.Equal(["a", "b", "", "xb"], pieces);
        Assert.Equal("", rest);
        Assert.Equal("length", text.FinishReason);

        // The stop string completes at the fourth token: the text ends before it, the later tokens are not taken.
        (pieces, rest, text) = Run([0, 23, 24, 25, 3, 4], ["xyz"]);
        Assert.Equal(["a", "", "", ""], pieces);
        Assert.Equal("stop", text.FinishReason);
        Assert.Equal(4, text.Ids.Count);
        Assert.Equal("", rest);

        // Held back at the end of the sequence: sent with the finish reason.
        (pieces, rest, _) = Run([0, 23, 24], ["xyz"]);
        Assert.Equal("xy", rest);
        Assert.Equal("a", string.Concat(pieces));
    }

    [Fact]
    public void The_streamed_text_should_equal_the_cut_of_the_whole_sequence()
    {
        var random = new Random(7);
        for (int n = 0; n < 200; n++)
        {
            long[] ids = Enumerable.Range(0, 12).Select(_ => (long)random.Next(4)).ToArray();
            string[] stops = [Decode([random.Next(4), random.Next(4), random.Next(4)])];
            int? stopToken = n % 3 == 0 ? 3 : null;
            var (pieces, rest, text) = Run(ids, stops, stopToken);
            var kept = stopToken is { } stop && Array.IndexOf(ids, (long)stop) is var at and >= 0 ? ids[..at] : ids;
            var cut = StopStrings.Apply(kept, stops, Decode);
            Assert.Equal(cut.Text, string.Concat(pieces) + rest);
            Assert.Equal(cut.Ids, text.Ids);
            Assert.Equal(cut.Stopped || kept.Length < ids.Length ? "stop" : "length", text.FinishReason);
        }
    }

    [Fact]
    public void A_stop_token_should_end_the_stream_without_being_sent()
    {
        var (pieces, rest, text) = Run([0, 1, 2, 1], [], stopToken: 2);
        Assert.Equal(["a", "b"], pieces);
        Assert.Equal("", rest);
        Assert.Equal("stop", text.FinishReason);
        Assert.Equal([0L, 1L], text.Ids);
    }
}
