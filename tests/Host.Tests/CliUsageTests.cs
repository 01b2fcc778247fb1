namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>Argument errors: exit code 2 and a message naming the problem, before anything is loaded.</summary>
public class CliUsageTests
{
    [Theory]
    [InlineData(new[] { "generate", "--percent", "100", "0", "100", "0", "100" }, "--percent needs six numbers")]
    [InlineData(new[] { "generate", "--percent", "150", "0", "100", "0", "100", "0" }, "WGpuPercent = 150")]
    [InlineData(new[] { "generate", "--percent", "60", "50", "100", "0", "100", "0" }, "gpu + cpu must be <= 100")]
    [InlineData(new[] { "generate", "--percent", "100", "0", "x", "0", "100", "0" }, "--percent")]
    [InlineData(new[] { "bench", "--gpu-batch-size", "0" }, "--gpu-batch-size")]
    [InlineData(new[] { "generate", "--attn-sparsity", "1.5" }, "--attn-sparsity")]
    [InlineData(new[] { "generate", "--model", "opt-999b" }, "not a folder and not a known preset")]
    [InlineData(new[] { "generate", "--model", "opt-350m" }, "opt-350m")]
    [InlineData(new[] { "generate", "--model", "./no/such/folder" }, "model folder not found")]
    [InlineData(new[] { "generate", "--compute-dtype", "int8" }, "--compute-dtype")]
    [InlineData(new[] { "generate", "--gen-len", "0" }, "--gen-len 0")]
    [InlineData(new[] { "generate", "--prompt", "Hello" }, "--prompt needs vocab.json and merges.txt")]
    [InlineData(new[] { "generate", "--input-ids", "/no/such/ids.npy" }, "--input-ids /no/such/ids.npy: file not found")]
    [InlineData(new[] { "bench", "--gen-len", "8", "--cut-gen-len", "9" }, "--cut-gen-len 9")]
    [InlineData(new[] { "generate", "--overlap", "maybe" }, "--overlap maybe: expected a boolean")]
    [InlineData(new[] { "frobnicate" }, "frobnicate")]
    [InlineData(new string[0], "command")]
    public async Task Bad_arguments_should_give_exit_code_2_and_name_the_problem(string[] args, string expected)
    {
        var result = await CliRunner.RunAsync(args);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(expected, result.Error);
    }

    [Theory]
    [InlineData(new[] { "convert" }, "missing arguments <hf-folder> <output-folder> (usage: flexgen convert <hf-folder> <output-folder>)")]
    [InlineData(new[] { "convert", "some/folder" }, "missing argument <output-folder> (usage: flexgen convert <hf-folder> <output-folder>)")]
    [InlineData(new[] { "convert", "a", "b", "c" }, "'convert' does not take 'c'")]
    [InlineData(new[] { "generate", "--no-such-flag" }, "'generate' does not take '--no-such-flag'")]
    [InlineData(new[] { "bench", "--nope", "3" }, "'bench' does not take '--nope', '3'")]
    [InlineData(new[] { "bench-disk", "--nope" }, "'bench-disk' does not take '--nope'")]
    [InlineData(new[] { "bench-pipeline", "--nope" }, "'bench-pipeline' does not take '--nope'")]
    [InlineData(new[] { "frobnicate", "x" }, "unknown command 'frobnicate' (commands: generate, bench, serve, worker, convert, bench-disk, bench-pipeline, profile, plan)")]
    [InlineData(new string[0], "no command given (commands: generate, bench, serve, worker, convert, bench-disk, bench-pipeline, profile, plan)")]
    public async Task Parse_errors_should_be_one_line_naming_what_is_missing_or_unknown(string[] args, string expected)
    {
        var result = await CliRunner.RunAsync(args);

        Assert.True(result.ExitCode == 2, result.ToString());
        var lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToList();
        Assert.Equal($"error: {expected}", Assert.Single(lines, l => l.StartsWith("error: ", StringComparison.Ordinal)));
        Assert.Equal(2, lines.Count); // the error and where to find the usage
        Assert.StartsWith("Run 'flexgen", lines[1]);
        Assert.Equal("", result.Output);
    }

    [Fact]
    public async Task Malformed_input_ids_should_give_exit_code_2_naming_the_file()
    {
        using var folder = new TempFolder();
        string text = folder.File("ids.npy");
        File.WriteAllText(text, "not an npy file");
        var notNpy = await CliRunner.RunAsync("generate", "--input-ids", text);
        Assert.True(notNpy.ExitCode == 2, notNpy.ToString());
        Assert.Contains(text, notNpy.Error);

        string floats = folder.File("floats.npy");
        using (var t = torch.zeros(2, 3)) NpyFile.Write(floats, t);
        var wrongType = await CliRunner.RunAsync("generate", "--input-ids", floats);
        Assert.True(wrongType.ExitCode == 2, wrongType.ToString());
        Assert.Contains("expected int64 (or int32) of shape (n, prompt_len)", wrongType.Error);

        string rank1 = folder.File("rank1.npy");
        using (var t = torch.ones(5, dtype: torch.ScalarType.Int64)) NpyFile.Write(rank1, t);
        var wrongRank = await CliRunner.RunAsync("generate", "--input-ids", rank1);
        Assert.Equal(2, wrongRank.ExitCode);
        Assert.Contains("shape (5)", wrongRank.Error);

        string outOfVocab = folder.File("big.npy");
        using (var t = torch.full(1, 4, 60000L, dtype: torch.ScalarType.Int64)) NpyFile.Write(outOfVocab, t);
        var badId = await CliRunner.RunAsync("generate", "--input-ids", outOfVocab);
        Assert.Equal(2, badId.ExitCode);
        Assert.Contains("id 60000", badId.Error);
    }

    [Theory]
    [InlineData("--sep-layer", "0", false)]
    [InlineData("--sep-layer", "False", false)]
    [InlineData("--overlap", "no", false)]
    [InlineData("--cpu-cache-compute", null, true)]
    [InlineData("--cpu-cache-compute", "yes", true)]
    public void Boolean_flags_should_read_values_as_FlexGen_str2bool_does(string flag, string? value, bool expected)
    {
        var root = FlexGen.Host.Cli.FlexGenCli.BuildRoot();
        var parse = root.Parse(value is null ? ["generate", flag, "--gen-len", "3"] : ["generate", flag, value, "--gen-len", "3"]);
        Assert.Empty(parse.Errors);
        Assert.Equal(expected ? "true" : "false", parse.GetValue<string>(flag));
        Assert.Equal(3, parse.GetValue<int>("--gen-len"));
    }

    [Fact]
    public async Task Help_should_list_the_commands_and_FlexGen_flags_with_exit_code_0()
    {
        var root = await CliRunner.RunAsync("--help");
        Assert.Equal(0, root.ExitCode);
        foreach (var command in new[] { "generate", "bench", "convert" }) Assert.Contains(command, root.Output);

        var generate = await CliRunner.RunAsync("generate", "--help");
        Assert.Equal(0, generate.ExitCode);
        foreach (var flag in new[] { "--model", "--input-ids", "--output-ids", "--prompt", "--gen-len", "--gpu-batch-size",
                     "--num-gpu-batches", "--percent", "--sep-layer", "--pin-weight", "--cpu-cache-compute", "--attn-sparsity",
                     "--compress-weight", "--compress-cache", "--overlap", "--offload-dir", "--compute-dtype", "--do-sample",
                     "--temperature", "--seed", "--stop", "--trace" })
            Assert.Contains(flag, generate.Output);
    }
}
