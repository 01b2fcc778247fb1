namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Host.Checkpoints;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;

public class ConvertTests
{
    public static TheoryData<bool, bool, int, bool> Layouts => new()
    {
        // model. prefix, lm_head present, shards, float32 storage
        { true, false, 1, false },
        { true, true, 1, true },
        { false, true, 3, false },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public async Task Convert_should_reproduce_the_bundled_FlexGen_files(bool prefix, bool lmHead, int shards, bool float32)
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = folder.File("converted");
        HfCheckpointBuilder.Build(hf, new(prefix, lmHead, Shards: shards,
            Dtype: float32 ? TorchSharp.torch.ScalarType.Float32 : TorchSharp.torch.ScalarType.Float16));

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("wrote 52 tensors", result.Output);
        Assert.Contains(lmHead ? "tied, not written" : "no lm_head.weight", result.Output);
        Assert.Contains("convert: done", result.Error);
        var expected = Directory.GetFiles(TestPaths.BundledModel).Select(Path.GetFileName).Order().ToArray();
        var actual = Directory.GetFiles(output).Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(expected, actual);
        foreach (var name in expected.Where(n => n != "config.json"))
        {
            using var want = NpyFile.Read(Path.Combine(TestPaths.BundledModel, name!));
            using var got = NpyFile.Read(Path.Combine(output, name!));
            Assert.Equal(TorchSharp.torch.ScalarType.Float16, got.dtype);
            Assert.True(got.eq(want).all().item<bool>(), name);
        }
        Assert.Equal(OptConfig.FromHuggingFaceConfig(TestPaths.BundledModel) with { Name = "x" },
            OptConfig.FromHuggingFaceConfig(output) with { Name = "x" });
    }

    [Fact]
    public void Convert_should_refuse_an_untied_lm_head()
    {
        using var folder = new TempFolder();
        HfCheckpointBuilder.Build(folder.File("hf"), new(LmHead: true, UntiedLmHead: true));
        var ex = Assert.Throws<UnsupportedModelException>(() => CheckpointConverter.Convert(folder.File("hf"), folder.File("out")));
        Assert.Contains("lm_head.weight", ex.Message);
    }

    [Fact]
    public async Task Convert_should_refuse_a_non_OPT_architecture_with_exit_code_2()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf");
        HfCheckpointBuilder.Build(hf);
        string config = File.ReadAllText(Path.Combine(hf, "config.json"))
            .Replace("\"OPTForCausalLM\"", "\"GPTNeoXForCausalLM\"").Replace("\"model_type\": \"opt\"", "\"model_type\": \"gpt_neox\"");
        File.WriteAllText(Path.Combine(hf, "config.json"), config);

        var result = await CliRunner.RunAsync("convert", hf, folder.File("out"));

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("gpt_neox", result.Error);
        Assert.Contains("only OPT", result.Error);
    }

    [Fact]
    public async Task Convert_should_name_a_missing_tensor()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf");
        HfCheckpointBuilder.Build(hf);
        string config = File.ReadAllText(Path.Combine(hf, "config.json")).Replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 4");
        File.WriteAllText(Path.Combine(hf, "config.json"), config);

        var result = await CliRunner.RunAsync("convert", hf, folder.File("out"));

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains("model.decoder.layers.3.self_attn.q_proj.weight", result.Error);
    }

    [Fact]
    public async Task Convert_should_give_exit_code_2_for_a_folder_without_a_checkpoint()
    {
        using var folder = new TempFolder();
        var missing = await CliRunner.RunAsync("convert", folder.File("nope"), folder.File("out"));
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("folder not found", missing.Error);

        File.Copy(Path.Combine(TestPaths.BundledModel, "config.json"), folder.File("config.json"));
        var noWeights = await CliRunner.RunAsync("convert", folder.Path, folder.File("out"));
        Assert.Equal(2, noWeights.ExitCode);
        Assert.Contains("model.safetensors", noWeights.Error);
    }

    public static TheoryData<string, string> OutputsAtTheCheckpoint => new()
    {
        // output folder (below the test's temporary folder, which holds hf and link -> hf), rule in the message
        { "hf/", "is the checkpoint folder" },
        { "hf/.", "is the checkpoint folder" },
        { "missing/../hf", "is the checkpoint folder" },
        { "link", "is the checkpoint folder" },
        { "link/", "is the checkpoint folder" },
        { "hf/out", "is inside the checkpoint folder" },
        { "link/sub/out", "is inside the checkpoint folder" },
        { ".", "holds the checkpoint folder" },
    };

    [Theory]
    [MemberData(nameof(OutputsAtTheCheckpoint))]
    public async Task Convert_should_refuse_an_output_folder_at_in_or_around_the_checkpoint_and_leave_it_untouched(string outputSpelling, string rule)
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = Path.Combine(folder.Path, outputSpelling);
        HfCheckpointBuilder.Build(hf);
        Directory.CreateSymbolicLink(folder.File("link"), "hf");
        var before = FolderSnapshot.Of(hf);

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal($"error: output-folder {output}: {rule} {hf}; the output must be written outside the checkpoint.", ErrorLine(result, "error:"));
        Assert.Equal(before, FolderSnapshot.Of(hf));
        Assert.Equal(["hf", "link"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public void Converter_should_refuse_the_checkpoint_folder_however_it_is_spelled()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf");
        HfCheckpointBuilder.Build(hf);
        Directory.CreateSymbolicLink(folder.File("link"), "hf");
        var before = FolderSnapshot.Of(hf);

        foreach (var output in new[] { hf + "/", folder.File("link") })
        {
            var ex = Assert.Throws<ConversionFolderException>(() => CheckpointConverter.Convert(hf, output));
            Assert.Equal(output, ex.Folder);
            Assert.Contains("is the checkpoint folder", ex.Message);
        }
        Assert.Equal(before, FolderSnapshot.Of(hf));
        Assert.Equal(["hf", "link"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Convert_should_refuse_an_output_folder_that_holds_files_and_leave_them_untouched()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = folder.File("out");
        HfCheckpointBuilder.Build(hf);
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "config.json"), "the user's own file");
        var before = FolderSnapshot.Of(output);

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal($"error: output-folder {output}: is not empty; convert writes only into a new or empty folder, so that no file already there is replaced.",
            ErrorLine(result, "error:"));
        Assert.Equal(before, FolderSnapshot.Of(output));
        Assert.Equal(["hf", "out"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Convert_should_refuse_an_output_path_that_is_a_file_and_leave_it_untouched()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = folder.File("out");
        HfCheckpointBuilder.Build(hf);
        File.WriteAllText(output, "the user's own file");

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal($"error: output-folder {output}: a file is in the way.", ErrorLine(result, "error:"));
        Assert.Equal("the user's own file", File.ReadAllText(output));
        Assert.Equal(["hf", "out"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Convert_should_fill_an_existing_empty_output_folder_and_leave_no_staging_folder()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = folder.File("out");
        HfCheckpointBuilder.Build(hf);
        Directory.CreateDirectory(output);

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(Directory.GetFiles(TestPaths.BundledModel).Select(Path.GetFileName).Order(StringComparer.Ordinal), FolderSnapshot.Names(output));
        Assert.Equal(["hf", "out"], FolderSnapshot.Names(folder.Path));
    }

    [Theory]
    [InlineData("out", false)]
    [InlineData("out", true)]
    [InlineData("new/deeper/out", false)]
    public async Task Convert_should_leave_nothing_behind_when_it_fails_after_writing_tensors(string outputName, bool outputExistsEmpty)
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), output = folder.File(outputName);
        // The untied head is found after every tensor is written: the latest point a conversion can fail.
        HfCheckpointBuilder.Build(hf, new(LmHead: true, UntiedLmHead: true));
        if (outputExistsEmpty) Directory.CreateDirectory(output);
        var before = FolderSnapshot.Of(hf);

        var result = await CliRunner.RunAsync("convert", hf, output);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.StartsWith($"failed: Model 'hf' is not supported: {hf}: 'lm_head.weight' differs from 'model.decoder.embed_tokens.weight'", ErrorLine(result, "failed:"));
        Assert.Equal(before, FolderSnapshot.Of(hf));
        Assert.Equal(outputExistsEmpty ? ["hf", "out"] : ["hf"], FolderSnapshot.Names(folder.Path));
        if (outputExistsEmpty) Assert.Empty(FolderSnapshot.Names(output));
    }

    [Fact]
    public void Converter_should_leave_nothing_behind_when_cancelled()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf");
        HfCheckpointBuilder.Build(hf);
        using var cancellation = new CancellationTokenSource();
        var cancelAfterTen = new CallbackProgress(done => { if (done == 10) cancellation.Cancel(); });

        Assert.ThrowsAny<OperationCanceledException>(() => CheckpointConverter.Convert(hf, folder.File("out"), cancelAfterTen, cancellation.Token));

        Assert.Equal(["hf"], FolderSnapshot.Names(folder.Path));
    }

    [Theory]
    [InlineData("../good/model.safetensors", "outside the checkpoint folder")]
    [InlineData("/etc/passwd", "is an absolute path")]
    public async Task Convert_should_refuse_a_shard_outside_the_checkpoint_naming_it(string shard, string rule)
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf"), good = folder.File("good");
        HfCheckpointBuilder.Build(hf, new(Shards: 3));
        HfCheckpointBuilder.Build(good);
        HfCheckpointBuilder.EditWeightMap(hf, map =>
        {
            foreach (var name in map.Where(p => p.Value!.GetValue<string>() == "model-00001-of-00003.safetensors").Select(p => p.Key).ToList())
                map[name] = shard;
        });
        var (hfBefore, goodBefore) = (FolderSnapshot.Of(hf), FolderSnapshot.Of(good));

        var result = await CliRunner.RunAsync("convert", hf, folder.File("out"));

        Assert.True(result.ExitCode == 1, result.ToString());
        string line = ErrorLine(result, "failed:");
        Assert.StartsWith($"failed: {Path.Combine(hf, SafetensorsCheckpoint.IndexFileName)}: shard '{shard}' (holding '", line);
        Assert.Contains(rule, line);
        Assert.Equal(hfBefore, FolderSnapshot.Of(hf));
        Assert.Equal(goodBefore, FolderSnapshot.Of(good));
        Assert.Equal(["good", "hf"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Convert_should_refuse_tensors_that_share_data_bytes_naming_both()
    {
        using var folder = new TempFolder();
        string hf = folder.File("hf");
        HfCheckpointBuilder.Build(hf);
        const string query = "model.decoder.layers.0.self_attn.q_proj.weight", key = "model.decoder.layers.0.self_attn.k_proj.weight";
        HfCheckpointBuilder.EditHeader(Path.Combine(hf, SafetensorsCheckpoint.SingleFileName),
            header => header[key]!["data_offsets"] = header[query]!["data_offsets"]!.DeepClone());
        var before = FolderSnapshot.Of(hf);

        var result = await CliRunner.RunAsync("convert", hf, folder.File("out"));

        Assert.True(result.ExitCode == 1, result.ToString());
        string line = ErrorLine(result, "failed:");
        Assert.StartsWith($"failed: {Path.Combine(hf, SafetensorsCheckpoint.SingleFileName)}: tensors '", line);
        Assert.Contains($"'{query}'", line);
        Assert.Contains($"'{key}'", line);
        Assert.Contains("overlap; each tensor must have its own bytes", line);
        Assert.Equal(before, FolderSnapshot.Of(hf));
        Assert.Equal(["hf"], FolderSnapshot.Names(folder.Path));
    }

    /// <summary>The one line of standard error that starts with <paramref name="prefix"/> ("error:" or "failed:").</summary>
    private static string ErrorLine(CliRunner.CliResult result, string prefix) =>
        Assert.Single(result.Error.Split('\n', StringSplitOptions.TrimEntries), l => l.StartsWith(prefix, StringComparison.Ordinal));

    private sealed class CallbackProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
