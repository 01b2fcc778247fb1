namespace FlexGen.Host.Tests;

using FlexGen.Host.Checkpoints;
using FlexGen.Tensors.Families.Llama;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>The Llama family through the CLI: convert the fixture's BF16 checkpoint, generate from it, bench a dummy model.</summary>
public class LlamaCliTests
{
    private static string LlamaTiny(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "llama-tiny", name);

    [Fact]
    public async Task Convert_of_the_bf16_checkpoint_should_give_the_same_model_folder()
    {
        using var folder = new TempFolder();
        string output = folder.File("model");

        var result = await CliRunner.RunAsync("convert", LlamaTiny("hf-bf16"), output);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("wrote 30 tensors", result.Output);
        Assert.Contains("lm_head.weight: an output projection of its own", result.Output);
        var config = (LlamaConfig)ModelFamilies.FromConfigFile(output);
        Assert.Equal(ModelFamilies.FromConfigFile(LlamaTiny("model")), config);
        foreach (var spec in config.Layers(sepLayer: true).SelectMany(l => l.Weights).DistinctBy(s => s.FileName))
        {
            using var converted = NpyFile.Read(Path.Combine(output, spec.FileName));
            using var expected = NpyFile.Read(Path.Combine(LlamaTiny("model"), spec.FileName));
            Assert.Equal(torch.ScalarType.Float16, converted.dtype);
            Assert.True(converted.shape.SequenceEqual(expected.shape) && converted.eq(expected).all().item<bool>(), spec.FileName);
        }
    }

    [Fact]
    public async Task Generate_from_the_converted_checkpoint_should_give_the_reference_tokens()
    {
        using var folder = new TempFolder();
        string model = folder.File("model");
        string output = folder.File("out.npy");
        var convert = CheckpointConverter.Convert(LlamaTiny("hf-bf16"), model);
        Assert.Empty(convert.IgnoredTensors);

        var generate = await CliRunner.RunAsync("generate", "--model", model, "--input-ids", LlamaTiny("prompt_ids.npy"),
            "--output-ids", output, "--compute-dtype", "float32", "--gen-len", "10", "--gpu-batch-size", "4",
            "--num-gpu-batches", "2", "--percent", "0", "50", "50", "25", "100", "0", "--offload-dir", folder.File("offload"), "--trace", "");

        Assert.True(generate.ExitCode == 0, generate.ToString());
        using var expected = NpyFile.Read(LlamaTiny("ref_fp32_tokens.npy"));
        using var actual = NpyFile.Read(output);
        Assert.Equal(expected.data<long>().ToArray(), actual.data<long>().ToArray());
    }

    [Fact]
    public async Task Bench_should_run_a_dummy_llama_model_with_weights_on_disk()
    {
        using var folder = new TempFolder();
        File.WriteAllText(folder.File("config.json"), """
            { "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 256,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 64 } }
            """);

        var result = await CliRunner.RunAsync("bench", "--model", folder.Path, "--path", "_DUMMY_", "--percent", "0", "0", "100", "0", "100", "0",
            "--prompt-len", "8", "--gen-len", "3", "--gpu-batch-size", "2", "--no-log", "--warmup", "false",
            "--offload-dir", folder.File("offload"), "--compute-dtype", "float32");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("model size", result.Output);
        Assert.Contains("total throughput", result.Output);
    }
}
