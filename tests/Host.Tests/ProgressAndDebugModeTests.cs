namespace FlexGen.Host.Tests;

using System.Text.RegularExpressions;
using FlexGen.Host.Cli;

public class GenerationProgressTests
{
    [Fact]
    public async Task Generate_with_redirected_output_should_print_plain_progress_lines_per_token()
    {
        // The 8 built-in prompts in one block.
        var result = await CliRunner.RunAsync("generate", "--trace", "", "--gen-len", "4", "--gpu-batch-size", "8", "--warmup", "false");

        Assert.True(result.ExitCode == 0, result.ToString());
        var lines = result.Error.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.StartsWith("generate: ", StringComparison.Ordinal)).ToList();
        Assert.DoesNotContain('\r', result.Error); // no in-place redraw when captured
        Assert.Equal("generate: started (0/4 tokens, 0%)", lines[1]);
        Assert.Equal(["generate: 1/4 tokens, 25%", "generate: 2/4 tokens, 50%", "generate: 3/4 tokens, 75%"], lines.Skip(2).Take(3));
        Assert.StartsWith("generate: done (4/4 tokens, 100%) in ", lines[5]);
        Assert.Equal(6, lines.Count);
    }

    [Fact]
    public async Task Generate_over_several_blocks_should_count_the_tokens_of_every_block()
    {
        // 8 built-in prompts in blocks of 2: 4 blocks x 2 tokens.
        var result = await CliRunner.RunAsync("generate", "--trace", "", "--gen-len", "2", "--gpu-batch-size", "2", "--warmup", "false");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("generate: started (0/8 tokens of 4 blocks, 0%)", result.Error);
        for (int done = 1; done < 8; done++)
            Assert.Contains($"generate: {done}/8 tokens of 4 blocks, {100.0 * done / 8:F0}%", result.Error);
        Assert.Contains("generate: done (8/8 tokens of 4 blocks, 100%) in ", result.Error);
    }
}

public class DebugModeTests
{
    private static readonly string[] Bench = ["bench", "--prompt-len", "8", "--gen-len", "32", "--no-log", "--warmup", "false"];

    [Fact]
    public async Task An_unknown_debug_mode_should_be_a_usage_error_naming_the_allowed_values()
    {
        var result = await CliRunner.RunAsync([.. Bench, "--debug-mode", "fewer_batches"]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--debug-mode fewer_batches", result.Error);
        Assert.Contains("fewer_batch or breakdown", result.Error);
    }

    [Theory]
    [InlineData(8, 4)]  // opt-tiny with sep-layer: 3 blocks as attention + mlp, 2 embeddings = 8 layers: 1 + ceil(20 / 8) tokens
    [InlineData(5, 5)]  // without: 5 layers, 1 + 4 tokens
    [InlineData(20, 2)]
    [InlineData(26, 2)]
    public void Debug_runs_should_compute_the_prefill_and_the_tokens_holding_20_decoding_layer_steps(int layers, int tokens)
    {
        Assert.Equal(tokens, DebugModes.TokensToRun(32, layers));
        Assert.Equal(1, DebugModes.TokensToRun(1, layers)); // never more than asked
    }

    [Fact]
    public async Task Bench_fewer_batch_should_compute_fewer_tokens_and_project_the_decode_latency()
    {
        var result = await CliRunner.RunAsync([.. Bench, "--debug-mode", "fewer_batch"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("generate: done (4/4 tokens, 100%)", result.Error); // 8 layers (sep-layer): prefill + 3 decoding tokens
        Assert.Contains("projected: true", result.Output);
        Assert.Contains("overlap true", result.Output);
        Assert.DoesNotContain("#layers", result.Output);
    }

    [Fact]
    public async Task Bench_breakdown_should_run_without_overlap_and_print_the_time_of_each_task_kind_per_phase()
    {
        var result = await CliRunner.RunAsync([.. Bench, "--debug-mode", "breakdown", "--sep-layer", "false", "--num-gpu-batches", "2"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("overlap false", result.Output);
        Assert.Contains("#layers: 5", result.Output);
        Assert.Contains("#batches prefill:  10", result.Output);
        Assert.Contains("#batches decoding: 310", result.Output);
        Assert.Contains("breakdown (5 of 32 tokens run):", result.Output);
        Assert.Contains("generate: done (5/5 tokens, 100%)", result.Error);
        // One compute part per (token, layer, GPU batch): 1 x 5 x 2 in prefill, 4 x 5 x 2 decoding.
        Assert.Equal(10, Parts(result.Output, "compute_layer (prefill)"));
        Assert.Equal(40, Parts(result.Output, "compute_layer (decoding)"));
        foreach (var kind in new[] { "load_weight", "load_cache", "load_hidden", "store_cache", "store_hidden" })
            Assert.Matches($@"{kind} \((prefill|decoding)\)\s+\d+\s+\d+\.\d{{3}}\s+\d+\.\d{{4}}", result.Output);
    }

    private static int Parts(string output, string row)
    {
        var match = Regex.Match(output, Regex.Escape(row) + @"\s+(\d+)\s");
        Assert.True(match.Success, $"no row {row} in\n{output}");
        return int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }
}
