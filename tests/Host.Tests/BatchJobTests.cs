namespace FlexGen.Host.Tests;

using System.Text.Json;
using FlexGen.Host.Cli;

/// <summary><c>generate --prompts-file in.jsonl --output out.jsonl</c>: the resumable batch job, in-process on the bundled model.</summary>
public class BatchJobTests
{
    /// <summary>A result line of the output file.</summary>
    public sealed record Line(string Id, long[] TokenIds, string Text);

    /// <summary>Every line of a batch output file, checked to be one JSON object of exactly id, token_ids, text; the file ends with a newline.</summary>
    public static List<Line> ReadOutput(string path)
    {
        string text = File.ReadAllText(path);
        Assert.True(text.Length == 0 || text.EndsWith('\n'), $"{path} does not end with a newline:\n{text}");
        var lines = new List<Line>();
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            using var json = JsonDocument.Parse(line);
            Assert.Equal(["id", "token_ids", "text"], json.RootElement.EnumerateObject().Select(p => p.Name));
            lines.Add(new Line(json.RootElement.GetProperty("id").GetString()!,
                json.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                json.RootElement.GetProperty("text").GetString()!));
        }
        return lines;
    }

    public static string IdsLine(string id, IEnumerable<long> ids, int? maxTokens = null) =>
        $"{{\"id\": \"{id}\", \"prompt_ids\": [{string.Join(", ", ids)}]{(maxTokens is { } m ? $", \"max_tokens\": {m}" : "")}}}";

    [Fact]
    public async Task A_batch_job_should_write_one_line_per_prompt_with_the_tokens_of_generate_input_ids()
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl"), output = folder.File("out.jsonl"), npy = folder.File("ids.npy");
        // The fixture's 8 prompts, unpadded; prompt 5 asks for 3 tokens only (its own block: one gen_len per block).
        File.WriteAllLines(input, Enumerable.Range(0, 8).Select(r => IdsLine($"q{r}", Fixture.UnpaddedPrompt(r), r == 5 ? 3 : null)));
        string[] policy = ["--gpu-batch-size", "2", "--num-gpu-batches", "2", "--percent", "0", "100", "100", "0", "100", "0", "--warmup", "false", "--trace", ""];

        var batch = await CliRunner.RunAsync(["generate", "--prompts-file", input, "--output", output, .. policy]);
        var single = await CliRunner.RunAsync(["generate", "--input-ids", TestPaths.Fixture("prompt_ids.npy"), "--output-ids", npy, .. policy]);

        Assert.True(batch.ExitCode == 0, batch.ToString());
        Assert.True(single.ExitCode == 0, single.ToString());
        Assert.Contains($"output: {output}", batch.Output);
        Assert.Contains("generate: 8 prompts, 0 already in", batch.Error);
        var expected = Fixture.ReadInt64Matrix(npy);
        var lines = ReadOutput(output);
        Assert.Equal(Enumerable.Range(0, 8).Select(r => $"q{r}").Order(), lines.Select(l => l.Id).Order());
        foreach (var line in lines)
        {
            int r = int.Parse(line.Id[1..]);
            Assert.Equal(Fixture.Row(expected, r).Take(r == 5 ? 3 : 10), line.TokenIds);
            Assert.Equal("", line.Text); // the bundled model has no tokenizer
        }
    }

    [Fact]
    public async Task A_rerun_should_skip_the_ids_already_done_and_repair_a_partial_last_line()
    {
        using var folder = new TempFolder();
        string model = folder.File("model"), input = folder.File("in.jsonl"), output = folder.File("out.jsonl");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(TestPaths.BundledModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        BpeTokenizerTests.WriteTinyVocabulary(model);
        // Text prompts and token ids mixed.
        var prompts = Enumerable.Range(0, 6).Select(r => IdsLine($"ids-{r}", Fixture.UnpaddedPrompt(r)))
            .Concat(["{\"id\": \"text-0\", \"prompt\": \"Hello world\"}", "{\"id\": \"text-1\", \"prompt\": \"Hello\", \"max_tokens\": 2}"]);
        File.WriteAllLines(input, prompts);
        string[] args = ["generate", "--model", model, "--prompts-file", input, "--output", output, "--gen-len", "4", "--gpu-batch-size", "2",
            "--warmup", "false", "--trace", ""];

        var first = await CliRunner.RunAsync(args);
        Assert.True(first.ExitCode == 0, first.ToString());
        var all = ReadOutput(output);
        Assert.Equal(8, all.Count);
        Assert.Equal(2, all.Single(l => l.Id == "text-1").TokenIds.Length);

        // Keep 3 whole lines and half of the 4th, as a writer killed mid-line would.
        var bytes = File.ReadAllBytes(output);
        int cut = IndexOfNth(bytes, (byte)'\n', 3) + 1;
        int half = IndexOfNth(bytes, (byte)'\n', 4) - cut;
        File.WriteAllBytes(output, bytes[..(cut + half / 2)]);

        var second = await CliRunner.RunAsync(args);

        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains($"--output {output}: removed a partial last line ({half / 2} bytes) left by an interrupted writer", second.Error);
        Assert.Contains("generate: 8 prompts, 3 already in", second.Error);
        Assert.Contains("batch: 5 prompts in", second.Output);
        var resumed = ReadOutput(output);
        Assert.Equal(all.Select(l => l.Id).Order(), resumed.Select(l => l.Id).Order()); // every id exactly once
        Assert.Equal(all.Take(3).Select(l => l.Id), resumed.Take(3).Select(l => l.Id)); // the done lines untouched
        foreach (var line in resumed)
        {
            var before = all.Single(l => l.Id == line.Id);
            Assert.Equal(before.TokenIds, line.TokenIds);
            Assert.Equal(before.Text, line.Text);
        }

        // Everything done: nothing runs, nothing changes.
        string finished = File.ReadAllText(output);
        var third = await CliRunner.RunAsync(args);
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Contains("batch: all 8 prompts are already in", third.Output);
        Assert.DoesNotContain("load weights", third.Error);
        Assert.Equal(finished, File.ReadAllText(output));
    }

    [Fact]
    public async Task A_stop_string_should_cut_each_lines_text_and_pad_its_ids_as_generate_does()
    {
        using var folder = new TempFolder();
        string model = folder.File("model"), input = folder.File("in.jsonl");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(TestPaths.BundledModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        // A vocabulary that names every id of the bundled model's 50,272 (id t decodes to "x" + t), so every generated
        // token has text; prompts are ids (nothing to encode, no merges needed).
        var config = FlexGen.Tensors.Models.ModelFamilies.FromNameOrPath(model);
        var vocab = Enumerable.Range(0, config.VocabSize).ToDictionary(t => t switch { 0 => "<s>", 1 => "<pad>", 2 => "</s>", 3 => "<unk>", _ => $"x{t}" }, t => t);
        File.WriteAllText(Path.Combine(model, FlexGen.Host.Text.BpeTokenizer.VocabFileName), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(model, FlexGen.Host.Text.BpeTokenizer.MergesFileName), "#version: 0.2\n");
        File.WriteAllLines(input, Enumerable.Range(0, 3).Select(r => IdsLine($"q{r}", Fixture.UnpaddedPrompt(r))));
        async Task<List<Line>> Run(string output, params string[] extra)
        {
            var result = await CliRunner.RunAsync(["generate", "--model", model, "--prompts-file", input, "--output", output, "--gen-len", "8",
                "--gpu-batch-size", "2", "--warmup", "false", "--trace", "", .. extra]);
            Assert.True(result.ExitCode == 0, result.ToString());
            return ReadOutput(output);
        }

        var plain = await Run(folder.File("plain.jsonl"));
        // The stop string: the text of the 4th token of one line, which ends there or earlier.
        var chosen = plain.First(l => l.Id == "q0");
        string stop = $"x{chosen.TokenIds[3]}";
        var cut = await Run(folder.File("cut.jsonl"), "--stop-string", stop);

        var tokenizer = FlexGen.Host.Text.BpeTokenizer.Load(model, config.Family.Tokenizer(config));
        Assert.Equal(plain.Select(l => l.Id).Order(), cut.Select(l => l.Id).Order());
        foreach (var line in cut)
        {
            var before = plain.Single(l => l.Id == line.Id);
            var expected = FlexGen.Host.Generation.StopStrings.Apply(before.TokenIds, [stop], tokenizer.Decode);
            Assert.Equal(expected.Text, line.Text);
            Assert.Equal(expected.Ids.Concat(Enumerable.Repeat((long)config.PadTokenId, before.TokenIds.Length - expected.Ids.Count)), line.TokenIds);
        }
        var stopped = cut.Single(l => l.Id == "q0");
        Assert.Equal(chosen.Text[..chosen.Text.IndexOf(stop, StringComparison.Ordinal)], stopped.Text);
        Assert.True(stopped.TokenIds.Skip(4).All(t => t == config.PadTokenId), string.Join(' ', stopped.TokenIds));
    }

    [Fact]
    public async Task A_partial_last_line_should_be_truncated_away_with_a_note()
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl"), output = folder.File("out.jsonl");
        File.WriteAllLines(input, [IdsLine("a", [2, 5]), IdsLine("b", [2, 6])]);
        string done = "{\"id\":\"a\",\"token_ids\":[7],\"text\":\"\"}\n{\"id\":\"b\",\"token_ids\":[8],\"text\":\"\"}\n";
        File.WriteAllText(output, done + "{\"id\":\"c\",\"tok");

        var result = await CliRunner.RunAsync("generate", "--prompts-file", input, "--output", output);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("removed a partial last line (14 bytes) left by an interrupted writer", result.Error);
        Assert.Contains("nothing to run", result.Output);
        Assert.Equal(done, File.ReadAllText(output));
    }

    [Theory]
    [InlineData("{\"prompt_ids\": [2, 5]}", "line 2: id: missing")]
    [InlineData("{\"id\": 7, \"prompt_ids\": [2, 5]}", "line 2: id: must be a string")]
    [InlineData("{\"id\": \"b\", \"prompt\": \"hi\", \"prompt_ids\": [2, 5]}", "line 2: prompt and prompt_ids: give one of them, not both")]
    [InlineData("{\"id\": \"b\"}", "line 2: prompt or prompt_ids: missing")]
    [InlineData("{\"id\": \"a\", \"prompt_ids\": [2, 5]}", "line 2: id \"a\" is a duplicate of line 1's")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2, 5]", "line 2: not valid JSON")]
    [InlineData("[1, 2]", "line 2: expected a JSON object, got an array")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2, 99999999]}", "line 2: prompt_ids: token id 99999999 at item 1 is outside the vocabulary")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2, \"x\"]}", "line 2: prompt_ids: item 1 is \"x\", not an integer token id")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": []}", "line 2: prompt_ids: must not be empty")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2], \"max_tokens\": 0}", "line 2: max_tokens: must be an integer >= 1, got 0")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2], \"max_tokens\": 5000}", "line 2: prompt_ids: 1 tokens + max_tokens 5000 - 1 positions exceed")]
    [InlineData("{\"id\": \"b\", \"prompt_ids\": [2], \"max_token\": 5}", "line 2: unknown field \"max_token\"")]
    [InlineData("{\"id\": \"b\", \"prompt\": \"hello\"}", "line 2: prompt: text needs vocab.json and merges.txt")]
    public async Task A_bad_input_line_should_be_a_usage_error_naming_the_line_and_the_field_before_anything_runs(string line, string message)
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl"), output = folder.File("out.jsonl");
        File.WriteAllText(input, IdsLine("a", [2, 5]) + "\n" + line + "\n" + IdsLine("c", [2, 7]) + "\n");

        var result = await CliRunner.RunAsync("generate", "--prompts-file", input, "--output", output);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.StartsWith($"error: --prompts-file {input}: {message}", result.Error);
        Assert.False(File.Exists(output), "the output file was created before the input was checked");
        Assert.DoesNotContain("load weights", result.Error);
    }

    [Theory]
    [InlineData(new[] { "--prompt", "hi" }, "--prompts-file cannot be used with --prompt or --input-ids.")]
    [InlineData(new[] { "--input-ids", "x.npy" }, "--prompts-file cannot be used with --prompt or --input-ids.")]
    [InlineData(new[] { "--output-ids", "x.npy" }, "--output-ids cannot be used with --prompts-file")]
    [InlineData(new[] { "--no-output" }, "--prompts-file needs --output")]
    public async Task Prompts_file_with_another_prompt_source_or_without_output_should_be_a_usage_error(string[] extra, string message)
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl");
        File.WriteAllLines(input, [IdsLine("a", [2, 5])]);
        string[] output = extra[0] == "--no-output" ? [] : ["--output", folder.File("out.jsonl")];

        var result = await CliRunner.RunAsync(["generate", "--prompts-file", input, .. output, .. extra.Where(e => e != "--no-output")]);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(message, result.Error);
    }

    [Fact]
    public async Task Output_without_a_prompts_file_should_be_a_usage_error()
    {
        var result = await CliRunner.RunAsync("generate", "--output", "out.jsonl");

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("--output is the result file of --prompts-file", result.Error);
    }

    [Fact]
    public async Task An_output_file_that_is_not_a_batch_output_should_be_a_usage_error_and_left_alone()
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl"), output = folder.File("out.jsonl");
        File.WriteAllLines(input, [IdsLine("a", [2, 5])]);
        File.WriteAllText(output, "{\"id\":\"x\",\"token_ids\":[],\"text\":\"\"}\nsome notes\npartial");

        var result = await CliRunner.RunAsync("generate", "--prompts-file", input, "--output", output);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains($"--output {output}: line 2 is not a result line", result.Error);
        Assert.Equal("{\"id\":\"x\",\"token_ids\":[],\"text\":\"\"}\nsome notes\npartial", File.ReadAllText(output));
    }

    [Fact]
    public void Plan_should_group_equal_settings_and_sort_each_group_by_length_into_blocks()
    {
        BatchPrompt P(string id, int length, int maxTokens) => new(id, 0, new long[length], maxTokens, false);
        var prompts = new[] { P("a", 5, 8), P("b", 2, 4), P("c", 9, 8), P("d", 1, 8), P("e", 3, 4), P("f", 7, 8) };

        var blocks = BatchJob.Plan(prompts, 2, p => new FlexGen.Tensors.Layers.GenerationSettings(p.MaxTokens));

        Assert.Equal(["b e", "d a", "f c"], blocks.Select(b => string.Join(' ', b.Prompts.Select(p => p.Id))));
        Assert.Equal([4, 8, 8], blocks.Select(b => b.Settings.GenLen));
    }

    private static int IndexOfNth(byte[] bytes, byte value, int n)
    {
        int at = -1;
        for (int i = 0; i < n; i++) at = Array.IndexOf(bytes, value, at + 1);
        return at;
    }
}

/// <summary>A batch job killed with SIGKILL mid-run (the built flexgen as a child process) and started again.</summary>
[Collection(SignalCollection.Name)]
public class BatchJobKillTests
{
    private const int Prompts = 200;

    [Fact]
    public async Task A_batch_job_killed_mid_run_should_finish_on_rerun_with_every_id_exactly_once()
    {
        using var folder = new TempFolder();
        string input = folder.File("in.jsonl"), output = folder.File("out.jsonl"), offload = folder.File("offload");
        Directory.CreateDirectory(offload);
        var random = new Random(7);
        File.WriteAllLines(input, Enumerable.Range(0, Prompts).Select(i =>
            BatchJobTests.IdsLine($"k{i}", Enumerable.Range(0, random.Next(2, 10)).Select(_ => (long)random.Next(3, 50000)))));
        // 100 blocks of 2 prompts, 4 tokens each, appended one block at a time: 20 blocks took 1.2 s on a quiet 2-core
        // machine, too short for the kill below to land mid-run every time; 100 leave several seconds.
        string[] args = ["generate", "--prompts-file", input, "--output", output, "--gen-len", "4", "--gpu-batch-size", "2",
            "--percent", "0", "100", "0", "100", "100", "0", "--offload-dir", offload, "--warmup", "false", "--trace", ""];

        int linesAtKill;
        using (var child = FlexGenProcess.Start(args))
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (Lines(output) < 4 && clock.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(10);
            child.Signal(9);
            await child.WaitForExit();
            linesAtKill = Lines(output);
            Assert.True(linesAtKill is >= 4 and < Prompts, $"{linesAtKill} lines when killed\n{child}");
        }

        using (var rerun = FlexGenProcess.Start(args))
        {
            int code = await rerun.WaitForExit();
            Assert.True(code == 0, rerun.ToString());
            Assert.Contains(rerun.ErrorLines, l => l.StartsWith($"generate: {Prompts} prompts, ", StringComparison.Ordinal) && !l.Contains(", 0 already", StringComparison.Ordinal));
        }

        var lines = BatchJobTests.ReadOutput(output);
        Assert.Equal(Enumerable.Range(0, Prompts).Select(i => $"k{i}").Order(), lines.Select(l => l.Id).Order());
        Assert.All(lines, l => Assert.Equal(4, l.TokenIds.Length));
    }

    private static int Lines(string path)
    {
        if (!File.Exists(path)) return 0;
        return File.ReadAllBytes(path).Count(b => b == (byte)'\n');
    }
}
