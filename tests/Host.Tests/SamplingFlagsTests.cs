namespace FlexGen.Host.Tests;

using FlexGen.Host.Generation;

/// <summary>Stop strings cut in the host, and generate's --top-k, --top-p and --stop-string.</summary>
public class SamplingFlagsTests
{
    /// <summary>A toy tokenizer: token id t is the letter 'a' + t; 26 is "ab" (a token spanning two letters).</summary>
    private static string Decode(IReadOnlyList<long> ids) => string.Concat(ids.Select(t => t == 26 ? "ab" : ((char)('a' + t)).ToString()));

    [Fact]
    public void The_text_should_be_cut_at_the_first_stop_string_and_later_tokens_dropped()
    {
        long[] ids = [7, 4, 11, 11, 14, 22, 14, 17, 11, 3]; // "helloworld"
        var cut = StopStrings.Apply(ids, ["wor", "ll"], Decode);
        Assert.True(cut.Stopped);
        Assert.Equal("he", cut.Text);
        Assert.Equal(new long[] { 7, 4, 11, 11 }, cut.Ids); // up to the token that completes "ll"

        var none = StopStrings.Apply(ids, ["xyz"], Decode);
        Assert.False(none.Stopped);
        Assert.Equal("helloworld", none.Text);
        Assert.Equal(ids, none.Ids);

        // A stop string completed inside a token that spans it: that token is kept, the text ends before the stop.
        var inside = StopStrings.Apply([2, 26, 2], ["cab"], Decode);
        Assert.Equal("", inside.Text);
        Assert.Equal(new long[] { 2, 26 }, inside.Ids);

        Assert.Throws<ArgumentException>(() => StopStrings.Apply(ids, [""], Decode));
    }

    [Fact]
    public void A_batch_should_hold_the_pad_id_after_the_cut()
    {
        var batch = new BatchGeneration(new long[,] { { 0, 1, 2, 3 }, { 3, 3, 3, 3 } }, null,
            new RunStatistics(2, 1, 4, TimeSpan.Zero, TimeSpan.Zero, new Dictionary<string, long>()), null);
        var cut = StopStrings.Apply(batch, ["bc"], Decode, padId: 99);
        Assert.Equal(new long[,] { { 0, 1, 2, 99 }, { 3, 3, 3, 3 } }, cut.OutputIds);
        Assert.Equal(new[] { "a", "dddd" }, cut.Texts);
    }

    [Theory]
    [InlineData("--top-k", "0", "--top-k 0: must be >= 1")]
    [InlineData("--top-p", "1.5", "--top-p 1.5: must be in (0, 1]")]
    [InlineData("--top-p", "0", "--top-p 0: must be in (0, 1]")]
    [InlineData("--stop-string", "\n", "--stop-string needs the model's tokenizer")]
    public async Task A_bad_sampling_flag_should_be_a_usage_error_naming_it(string flag, string value, string message)
    {
        var result = await CliRunner.RunAsync("generate", flag, value, "--do-sample", "--gen-len", "2", "--trace", "");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Error);
    }

    [Fact]
    public async Task Sampling_from_the_top_1_should_generate_the_greedy_tokens()
    {
        using var temp = new TempFolder();
        async Task<long[,]> Run(params string[] extra)
        {
            string path = temp.File($"out-{Guid.NewGuid():N}.npy");
            var result = await CliRunner.RunAsync(["generate", "--gen-len", "6", "--warmup", "false", "--trace", "", "--output-ids", path, .. extra]);
            Assert.True(result.ExitCode == 0, result.ToString());
            return Fixture.ReadInt64Matrix(path);
        }

        var greedy = await Run();
        Assert.Equal(greedy, await Run("--do-sample", "--temperature", "1.3", "--top-k", "1", "--seed", "5"));
        var nucleus = await Run("--do-sample", "--top-p", "0.5", "--top-k", "20", "--seed", "5");
        Assert.Equal(nucleus, await Run("--do-sample", "--top-p", "0.5", "--top-k", "20", "--seed", "5"));
    }
}
