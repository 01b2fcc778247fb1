namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Families.Opt;
using System.Text.RegularExpressions;
using FlexGen.Host.Cli;
using FlexGen.Tensors.Npy;

/// <summary>End-to-end runs of the CLI on the bundled model, in-process.</summary>
public class GenerateCommandTests
{
    [Fact]
    public async Task Generate_without_arguments_should_run_the_bundled_model_on_the_built_in_prompts()
    {
        var result = await CliRunner.RunAsync("generate");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("model: opt-tiny", result.Output);
        Assert.Contains("percent 100 0 100 0 100 0, sep-layer true, overlap true, cpu-cache-compute false", result.Output); // FlexGen's defaults
        Assert.Contains("generated ids (8, 10):", result.Output);
        var hf = Fixture.HfTokens;
        for (int r = 0; r < 8; r++)
            Assert.Contains($"[{r}] {string.Join(' ', Fixture.Row(hf, r))}", result.Output);
        Assert.Contains("throughput:", result.Output);
        Assert.Contains("peak memory: gpu", result.Output);
        Assert.Contains("timeline: wall", result.Output);
        Assert.Contains("gpu-compute", result.Output);
        string trace = Path.GetFullPath(GenerateCommand.DefaultTracePath);
        Assert.Contains($"trace: {trace}", result.Output);
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(trace));
        Assert.True(json.RootElement.ValueKind is System.Text.Json.JsonValueKind.Object or System.Text.Json.JsonValueKind.Array);
        Assert.Contains("\"ph\"", File.ReadAllText(trace));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Convert_then_generate_should_reproduce_the_Hugging_Face_greedy_tokens(bool lmHead)
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), model = folder.File("model"), output = folder.File("out.npy");
        HfCheckpointBuilder.Build(hf, new(LmHead: lmHead));
        var convert = await CliRunner.RunAsync("convert", hf, model);
        Assert.True(convert.ExitCode == 0, convert.ToString());

        var generate = await CliRunner.RunAsync("generate", "--model", model, "--input-ids", TestPaths.Fixture("prompt_ids.npy"),
            "--output-ids", output, "--compute-dtype", "float32", "--trace", folder.File("run.trace.json"));

        Assert.True(generate.ExitCode == 0, generate.ToString());
        var header = NpyFile.ReadHeader(output);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, header.DType);
        Assert.Equal(Fixture.HfTokens, Fixture.ReadInt64Matrix(output));
        Assert.True(File.Exists(folder.File("run.trace.json")));
    }

    [Fact]
    public async Task Generate_should_encode_text_prompts_and_print_decoded_text_when_the_model_has_a_tokenizer()
    {
        using var folder = new TempFolder();
        string model = folder.File("model");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(TestPaths.BundledModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        BpeTokenizerTests.WriteTinyVocabulary(model);

        var result = await CliRunner.RunAsync("generate", "--model", model, "--prompt", "Hello world", "--prompt", "Hello",
            "--gen-len", "3", "--output-ids", folder.File("out.npy"), "--trace", "");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("generated ids (2, 3):", result.Output);
        Assert.Contains("      \"", result.Output); // a decoded text line under each row
        Assert.Equal([2L, 3L], NpyFile.ReadHeader(folder.File("out.npy")).Shape);
    }

    [Fact]
    public async Task Bench_should_print_FlexGen_benchmark_numbers_and_append_the_log_file()
    {
        using var folder = new TempFolder();
        string log = folder.File("bench.log");

        var result = await CliRunner.RunAsync("bench", "--prompt-len", "16", "--gen-len", "8", "--cut-gen-len", "4",
            "--gpu-batch-size", "2", "--num-gpu-batches", "2", "--log-file", log);

        Assert.True(result.ExitCode == 0, result.ToString());
        foreach (var text in new[] { "model size:", "cache size:", "hidden size (p):", "peak gpu mem:", "peak cpu mem:",
                     "projected: true", "prefill latency:", "decode throughput:", "total throughput:" })
            Assert.Contains(text, result.Output);
        Assert.Contains("total throughput:", File.ReadAllText(log));
    }
}

public class BenchDiskCommandTests
{
    [Fact]
    public async Task Bench_disk_should_measure_a_small_file_and_leave_nothing_behind()
    {
        using var folder = new TempFolder();
        var result = await CliRunner.RunAsync("bench-disk", "--offload-dir", folder.Path, "--size-gb", "0.004");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("disk benchmark:", result.Output);
        Assert.Contains("O_DIRECT", result.Output);
        Assert.Empty(Directory.GetFileSystemEntries(folder.Path));
    }

    [Fact]
    public async Task Bench_disk_should_refuse_a_missing_folder_with_exit_code_2()
    {
        var result = await CliRunner.RunAsync("bench-disk", "--offload-dir", "/no/such/dir");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("/no/such/dir", result.Error);
    }
}

public class GenerateOptionsTests
{
    private static async Task<long[,]> RunAsync(TempFolder folder, params string[] extra)
    {
        string output = folder.File($"out-{Guid.NewGuid():N}.npy");
        var result = await CliRunner.RunAsync(["generate", "--output-ids", output, "--trace", "", .. extra]);
        Assert.True(result.ExitCode == 0, result.ToString());
        return Fixture.ReadInt64Matrix(output);
    }

    [Fact]
    public async Task Stop_should_end_a_sequence_after_its_stop_token_with_pads()
    {
        using var folder = new TempFolder();
        long stop = Fixture.HfTokens[1, 0]; // sequence 1 emits it first
        var tokens = await RunAsync(folder, "--stop", stop.ToString());
        Assert.Equal(stop, tokens[1, 0]);
        Assert.All(Enumerable.Range(1, 9), c => Assert.Equal(1L, tokens[1, c]));
        Assert.Equal(Fixture.Row(Fixture.HfTokens, 0), Fixture.Row(tokens, 0)); // others unaffected
    }

    [Fact]
    public async Task Sampling_with_a_seed_should_repeat_and_differ_from_greedy()
    {
        using var folder = new TempFolder();
        var first = await RunAsync(folder, "--do-sample", "--temperature", "2.0", "--seed", "7");
        var second = await RunAsync(folder, "--do-sample", "--temperature", "2.0", "--seed", "7");
        Assert.Equal(first, second);
        Assert.NotEqual(Fixture.HfTokens, first);
    }

    [Fact]
    public async Task Generate_should_report_weight_loading_and_generation_on_stderr()
    {
        var result = await CliRunner.RunAsync("generate", "--trace", "", "--gen-len", "2");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("load weights: opt-tiny", result.Error);
        // Redirected: plain lines, at most one per tenth of the bytes, each naming the layer just loaded (8 with sep-layer).
        var layers = result.Error.Split('\n')
            .Select(line => Regex.Match(line.TrimEnd(), @"^load weights: layer (\d)/8, ([\d.]+)/12\.8 MB, \d+%$"))
            .Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value)).ToList();
        Assert.NotEmpty(layers);
        Assert.Equal(layers.Order().Distinct(), layers);
        Assert.Contains("load weights: done in", result.Error);
        Assert.Contains("generate: done (4/4 tokens of 2 blocks, 100%) in", result.Error); // 8 prompts in blocks of 4
    }
}

public class BenchPresetTests
{
    [Fact]
    public async Task Bench_should_run_a_preset_with_dummy_weights()
    {
        var result = await CliRunner.RunAsync("bench", "--model", "facebook/opt-125m", "--path", "_DUMMY_", "--prompt-len", "8",
            "--gen-len", "3", "--gpu-batch-size", "1", "--no-log", "--warmup", "false");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("model: opt-125m (dummy weights)", result.Output);
        Assert.Contains("model size: 0.230 GB", result.Output);
        Assert.Contains("load dummy weights: done", result.Error);
    }

    [Fact]
    public async Task A_preset_without_weights_under_path_should_be_a_usage_error()
    {
        using var folder = new TempFolder();
        var result = await CliRunner.RunAsync("bench", "--model", "opt-125m", "--path", folder.Path);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("opt-125m-np", result.Error);
    }
}

public class FailureReportingTests
{
    [Fact]
    public async Task A_failure_should_give_exit_code_1_and_one_line_naming_it_with_details_under_verbose()
    {
        using var folder = new TempFolder();
        string model = folder.File("model");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(TestPaths.BundledModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(model, "decoder.layers.1.fc1.weight"), "truncated");

        var plain = await CliRunner.RunAsync("generate", "--model", model, "--trace", "", "--gen-len", "2");
        Assert.True(plain.ExitCode == 1, plain.ToString());
        var failed = plain.Error.Split('\n').Where(l => l.StartsWith("failed: ", StringComparison.Ordinal)).ToList();
        Assert.Single(failed);
        Assert.Contains("decoder.layers.1.fc1.weight", failed[0]);
        Assert.DoesNotContain("   at ", plain.Error);

        var verbose = await CliRunner.RunAsync("generate", "--model", model, "--trace", "", "--gen-len", "2", "--verbose");
        Assert.Equal(1, verbose.ExitCode);
        Assert.Contains("   at ", verbose.Error);
    }
}

public class OutputFileFailureTests
{
    [Fact]
    public async Task An_unwritable_output_file_should_fail_with_one_line_naming_the_flag_and_file()
    {
        using var folder = new TempFolder();
        string blocker = folder.File("blocker");
        File.WriteAllText(blocker, "a file where a folder should be");
        string target = Path.Combine(blocker, "ids.npy");

        var result = await CliRunner.RunAsync("generate", "--gen-len", "1", "--warmup", "false", "--trace", "", "--output-ids", target);
        Assert.True(result.ExitCode == 1, result.ToString());
        var failed = Assert.Single(result.Error.Split('\n'), l => l.StartsWith("failed: ", StringComparison.Ordinal));
        Assert.Equal($"failed: --output-ids {target}: cannot write: {blocker} is a file, not a folder (--verbose for details)", failed.TrimEnd());
    }

    [Fact]
    public void Writing_a_result_file_should_say_plainly_what_failed_and_why()
    {
        using var folder = new TempFolder();
        string blocker = folder.File("blocker");
        File.WriteAllText(blocker, "a file where a folder should be");

        var deep = Assert.Throws<OutputFileException>(() => GenerationFlags.WriteFile("--trace", Path.Combine(blocker, "a", "t.json"), _ => { }));
        Assert.Equal($"--trace {Path.Combine(blocker, "a", "t.json")}: cannot write: {blocker} is a file, not a folder", deep.Message);

        var isFolder = Assert.Throws<OutputFileException>(() => GenerationFlags.WriteFile("--output-ids", folder.Path, _ => { }));
        Assert.Equal($"--output-ids {folder.Path}: cannot write: {folder.Path} is a folder", isFolder.Message);

        string target = folder.File("ids.npy");
        var denied = Assert.Throws<OutputFileException>(() => GenerationFlags.WriteFile("--output-ids", target,
            full => throw new UnauthorizedAccessException($"Access to the path '{full}' is denied.")));
        Assert.Equal($"--output-ids {target}: cannot write: permission denied", denied.Message);
        Assert.IsType<UnauthorizedAccessException>(denied.InnerException); // kept for --verbose

        var full = Assert.Throws<OutputFileException>(() => GenerationFlags.WriteFile("--log-file", target,
            _ => throw new IOException("No space left on device")));
        Assert.Equal($"--log-file {target}: cannot write: No space left on device", full.Message);

        // The folder is created when it is missing.
        string nested = Path.Combine(folder.Path, "x", "y", "ids.npy");
        Assert.Equal(nested, GenerationFlags.WriteFile("--output-ids", nested, f => File.WriteAllText(f, "ok")));
        Assert.Equal("ok", File.ReadAllText(nested));
    }
}

public class ComputeDtypeTests
{
    [Fact]
    public async Task Bfloat16_compute_should_run_and_float16_should_be_refused_without_CUDA()
    {
        var bf16 = await CliRunner.RunAsync("generate", "--compute-dtype", "bfloat16", "--gen-len", "3", "--trace", "");
        Assert.True(bf16.ExitCode == 0, bf16.ToString());
        Assert.Contains("compute: bfloat16", bf16.Output);

        if (FlexGen.Tensors.TorchRuntime.CudaAvailable) return; // float16 is the CUDA default there
        var fp16 = await CliRunner.RunAsync("generate", "--compute-dtype", "float16");
        Assert.Equal(2, fp16.ExitCode);
        Assert.Contains("--compute-dtype float16", fp16.Error);
    }
}

public class BenchPipelineCommandTests
{
    [Fact]
    public async Task Bench_pipeline_should_compare_overlap_off_and_on_on_a_small_model()
    {
        using var folder = new TempFolder();
        var result = await CliRunner.RunAsync("bench-pipeline", "--hidden-size", "64", "--heads", "4", "--blocks", "2",
            "--gpu-batch-size", "2", "--num-gpu-batches", "2", "--gen-len", "3", "--offload-dir", folder.Path,
            "--repeats", "1", "--io-threads", "1", "--trace", folder.File("pipeline.trace.json"));
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("compute BFloat16 on", result.Output);
        Assert.Contains("1 disk I/O thread(s)", result.Output);
        Assert.Contains("1 request(s) per mode in turns", result.Output);
        Assert.Contains("balance with overlap off: compute busy", result.Output);
        Assert.Contains("speedup overlap on / off:", result.Output);
        Assert.True(File.Exists(folder.File("pipeline.trace.json")));
    }

    [Fact]
    public async Task Bench_pipeline_should_refuse_zero_repeats_naming_the_flag()
    {
        var result = await CliRunner.RunAsync("bench-pipeline", "--repeats", "0");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--repeats 0: must be >= 1.", result.Error);
    }

    [Fact]
    public async Task Bench_pipeline_should_refuse_a_hidden_size_that_is_not_a_multiple_of_the_heads()
    {
        var result = await CliRunner.RunAsync("bench-pipeline", "--hidden-size", "65", "--heads", "4");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--hidden-size 65", result.Error);
    }
}
