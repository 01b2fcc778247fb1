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
            .Replace("\"OPTForCausalLM\"", "\"LlamaForCausalLM\"").Replace("\"model_type\": \"opt\"", "\"model_type\": \"llama\"");
        File.WriteAllText(Path.Combine(hf, "config.json"), config);

        var result = await CliRunner.RunAsync("convert", hf, folder.File("out"));

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("llama", result.Error);
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
}
