namespace FlexGen.Tensors.Tests.Models;

using FlexGen.Tensors.Families.Llama;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>The llama-tiny fixture (a random Llama with GQA and an untied head) and its float32 reference outputs.</summary>
public static class LlamaTiny
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "llama-tiny");

    /// <summary>The model folder (float16 files, converted from the fixture's hf/).</summary>
    public static string ModelDir => Path.Combine(Dir, "model");

    public static Tensor Read(string name) => NpyFile.Read(Path.Combine(Dir, name));

    public static LlamaConfig Config() => (LlamaConfig)ModelFamilies.FromConfigFile(ModelDir);
}

public class LlamaFamilyTests
{
    [Fact]
    public void Config_should_read_the_fixture_as_grouped_query_llama_with_an_untied_head()
    {
        var config = LlamaTiny.Config();

        Assert.IsType<LlamaFamily>(config.Family);
        Assert.Equal((3, 64, 4, 2, 16, 176, 512), (config.NumBlocks, config.HiddenSize, config.NumHeads, config.KvHeads, config.HeadDim, config.IntermediateSize, config.VocabSize));
        Assert.Equal((1e-6, 10000.0, 256, false, false), (config.RmsNormEps, config.RopeTheta, config.MaxSeqLen, config.TieWordEmbeddings, config.QkvBias));
        Assert.Equal((1, 2, 0), (config.BosTokenId, config.EosTokenId, config.PadTokenId));
        Assert.Null(config.RopeScaling);
        Assert.Equal(config, ModelFamilies.FromNameOrPath(LlamaTiny.ModelDir));
    }

    [Fact]
    public void Specs_should_match_the_converted_folder_and_model_bytes_their_sum()
    {
        var config = LlamaTiny.Config();
        var layers = config.Layers(sepLayer: false);
        var specs = layers.SelectMany(l => l.Weights).DistinctBy(s => s.FileName).ToArray();

        WeightFiles.Check(LlamaTiny.ModelDir, config.Name, specs);
        Assert.Equal(30, specs.Length);
        Assert.Equal(specs.Sum(s => s.Bytes), config.ModelBytes());
        Assert.Equal([LayerKind.InputEmbedding, LayerKind.Block, LayerKind.Block, LayerKind.Block, LayerKind.OutputEmbedding], layers.Select(l => l.Kind));
        Assert.Equal(["norm.weight", "lm_head.weight"], layers[^1].Weights.Select(w => w.FileName));
        Assert.Equal(2L * 5 * 7 * 3 * 2 * 16 * 2, config.CacheBytes(5, 7)); // k and v, KV heads only
    }

    [Theory]
    [InlineData("llama-3.2-1b", 1_235_814_400L, 8, 64, true)]
    [InlineData("meta-llama/Llama-3.1-8B", 8_030_261_248L, 8, 128, false)]
    [InlineData("llama-2-7b", 6_738_415_616L, 32, 128, false)]
    [InlineData("meta-llama/Llama-2-13b-hf", 13_015_864_320L, 40, 128, false)]
    [InlineData("llama-2-70b", 68_976_648_192L, 8, 128, false)]
    [InlineData("mistralai/Mistral-7B-v0.1", 7_241_732_096L, 8, 128, false)]
    [InlineData("Qwen/Qwen2.5-7B", 7_615_616_512L, 4, 128, false)]
    public void Presets_should_have_the_published_parameter_counts(string name, long parameters, int kvHeads, int headDim, bool tied)
    {
        var config = (LlamaConfig)ModelFamilies.FromPreset(name);

        Assert.Equal(2 * parameters, config.ModelBytes());
        Assert.Equal(config.ModelBytes(), config.Layers(sepLayer: true).SelectMany(l => l.Weights).DistinctBy(w => w.FileName).Sum(w => w.Bytes));
        Assert.Equal((kvHeads, headDim, tied), (config.KvHeads, config.HeadDim, config.TieWordEmbeddings));
        Assert.Equal(2L * 4 * 100 * config.NumBlocks * kvHeads * headDim * 2, config.CacheBytes(4, 100));
    }

    [Fact]
    public void Mistral_should_refuse_positions_beyond_its_sliding_window()
    {
        var mistral = (LlamaConfig)ModelFamilies.FromPreset("mistral-7b");

        Assert.Equal(4096, mistral.SlidingWindow);
        Assert.True(mistral.Fits(4000, 97));
        Assert.False(mistral.Fits(4000, 98));
    }

    [Fact]
    public void Config_should_read_qwen2_biases_llama3_scaling_and_refuse_other_rope_types()
    {
        using var folder = new ConfigFolder();
        var qwen = (LlamaConfig)folder.Read("""
            { "model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 2, "intermediate_size": 96, "vocab_size": 100, "rms_norm_eps": 1e-6,
              "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": false, "tie_word_embeddings": true,
              "bos_token_id": 5, "eos_token_id": 6 }
            """);
        Assert.True(qwen.QkvBias);
        Assert.False(qwen.OutBias);
        Assert.Null(qwen.SlidingWindow);
        Assert.Equal(["q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias", "o_proj.weight", "input_layernorm.weight"],
            LlamaWeightSpecs.SelfAttention(qwen, 0).Select(s => s.FileName.Split('.', 3)[2].Replace("self_attn.", "")));
        Assert.Equal("embed_tokens.weight", LlamaWeightSpecs.OutputEmbed(qwen)[1].FileName);

        var llama31 = (LlamaConfig)folder.Read("""
            { "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
              "num_hidden_layers": 1, "intermediate_size": 96, "vocab_size": 100, "eos_token_id": [7, 8, 9],
              "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192 }, "rope_theta": 500000.0 }
            """);
        Assert.Equal(new Llama3RopeScaling(8, 1, 4, 8192), llama31.RopeScaling);
        Assert.Equal(7, llama31.EosTokenId);
        Assert.Equal(7, llama31.PadTokenId);

        var ex = Assert.Throws<UnsupportedModelException>(() => folder.Read("""
            { "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
              "intermediate_size": 96, "vocab_size": 100, "rope_scaling": { "type": "yarn", "factor": 4.0 } }
            """));
        Assert.Equal("rope_scaling", ex.Key);
        Assert.Contains("\"yarn\"", ex.Message);
    }

    [Fact]
    public void Config_should_read_the_rope_parameters_of_transformers_v5()
    {
        using var folder = new ConfigFolder();
        // transformers v5: rope_theta and the scaling in one rope_parameters object, no top-level rope_theta / rope_scaling.
        var llama31 = (LlamaConfig)folder.Read("""
            { "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
              "num_hidden_layers": 1, "intermediate_size": 96, "vocab_size": 100, "dtype": "bfloat16",
              "rope_parameters": { "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192 } }
            """);
        Assert.Equal(500000.0, llama31.RopeTheta);
        Assert.Equal(new Llama3RopeScaling(32, 1, 4, 8192), llama31.RopeScaling);

        var plain = (LlamaConfig)folder.Read("""
            { "model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
              "intermediate_size": 96, "vocab_size": 100, "rope_parameters": { "rope_type": "default", "rope_theta": 1000000.0 } }
            """);
        Assert.Equal(1000000.0, plain.RopeTheta);
        Assert.Null(plain.RopeScaling);

        var untyped = (LlamaConfig)folder.Read("""
            { "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
              "intermediate_size": 96, "vocab_size": 100, "rope_parameters": { "rope_theta": 20000.0 } }
            """);
        Assert.Equal(20000.0, untyped.RopeTheta);
        Assert.Null(untyped.RopeScaling);

        var ex = Assert.Throws<UnsupportedModelException>(() => folder.Read("""
            { "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
              "intermediate_size": 96, "vocab_size": 100, "rope_parameters": { "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0 } }
            """));
        Assert.Equal("rope_parameters", ex.Key);
    }

    [Fact]
    public void A_given_head_dim_should_place_a_hidden_size_that_is_no_multiple_of_the_heads()
    {
        using var folder = new ConfigFolder();
        var config = (LlamaConfig)folder.Read("""
            { "model_type": "llama", "hidden_size": 40, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 10,
              "num_hidden_layers": 1, "intermediate_size": 96, "vocab_size": 100, "max_position_embeddings": 32 }
            """);
        Assert.True(config.HeadDimGiven);
        var policy = FlexGen.Tensors.Policies.Policy.FromPercent([100, 0, 50, 50, 100, 0], 2, 1);

        var plan = FlexGen.Tensors.Placement.PlacementPlan.Create(config, policy, promptLen: 8, genLen: 4);

        Assert.Equal(new long[] { 8 + 4 - 1, 2 * 2, 10 }, plan.Cache.Shape);
    }

    [Fact]
    public void Llama3_scaling_should_keep_high_frequencies_and_divide_low_ones()
    {
        var plain = new LlamaConfig { Name = "x", NumHiddenLayers = 1, NHead = 1, NumKeyValueHeads = 1, HiddenSize = 128, IntermediateSize = 8, RopeTheta = 500000 };
        var scaled = plain with { RopeScaling = new(8, 1, 4, 8192) };
        var a = LlamaLayerCompute.InverseFrequencies(plain);
        var b = LlamaLayerCompute.InverseFrequencies(scaled);

        Assert.Equal(a[0], b[0]); // wavelength 2 pi < 8192 / 4: kept
        Assert.Equal(a[^1] / 8, b[^1], 6); // wavelength far above 8192: divided by the factor
    }

    [Fact]
    public void Reference_loop_should_give_the_fixture_tokens_and_prefill_logits_in_float32()
    {
        var config = LlamaTiny.Config();
        var weights = LlamaReference.LoadWeights(config, LlamaTiny.ModelDir);
        try
        {
            using var ids = LlamaTiny.Read("prompt_ids.npy");
            using var mask = LlamaTiny.Read("prompt_mask.npy");
            var (tokens, logits) = LlamaReference.Generate(config, weights, ids, mask, new GenerationSettings(10),
                ComputeSettings.Float32, keepLogits: true);
            using var expected = LlamaTiny.Read("ref_fp32_tokens.npy");
            using var expectedLogits = LlamaTiny.Read("ref_prefill_last_logits.npy");

            Assert.Equal(expected.data<long>().ToArray(), tokens.data<long>().ToArray());
            float error = logits[0].sub(expectedLogits).abs().max().item<float>();
            Assert.True(error < 1e-4f, $"prefill logits differ by {error}");
            tokens.Dispose();
            foreach (var l in logits) l.Dispose();
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
    }

    [Fact]
    public void Grouped_decode_over_split_segments_should_equal_one_segment()
    {
        var config = new LlamaConfig { Name = "gqa", NumHiddenLayers = 1, NHead = 6, NumKeyValueHeads = 2, HiddenSize = 48, IntermediateSize = 64, VocabSize = 50, QkvBias = true };
        using var scope = NewDisposeScope();
        var gen = new Generator(3, CPU);
        var math = new LlamaLayerCompute(config);
        var attention = LlamaWeightSpecs.SelfAttention(config, 0).Select(s => torch.randn(s.Shape.ToArray(), generator: gen).mul(0.3)).ToArray();
        var hidden = torch.randn([3, 1, 48], generator: gen);
        var mask = torch.ones([3, 6], ScalarType.Bool);
        mask[1, 0] = torch.tensor(false);
        var key = torch.randn([5, 6, 8], generator: gen);
        var value = torch.randn([5, 6, 8], generator: gen);

        using var whole = math.Decode(hidden, mask, attention, [new CacheSegment(key, value, ComputeSettings.Float32)], ComputeSettings.Float32, 1.0);
        using var split = math.Decode(hidden, mask, attention,
            [new CacheSegment(key.narrow(1, 0, 2), value.narrow(1, 0, 2), ComputeSettings.Float32),
             new CacheSegment(key.narrow(1, 2, 4), value.narrow(1, 2, 4), ComputeSettings.Float32)], ComputeSettings.Float32, 1.0);
        using var sparse = math.Decode(hidden, mask, attention, [new CacheSegment(key, value, ComputeSettings.Float32)], ComputeSettings.Float32, 0.5);
        using var fetched = math.Decode(hidden, mask, attention,
            [new CacheSegment(key, positions => value.gather(0, positions.unsqueeze(2).expand(-1, -1, 8)), ComputeSettings.Float32)], ComputeSettings.Float32, 0.5);

        Assert.True(whole.Hidden.allclose(split.Hidden, rtol: 1e-5, atol: 1e-6));
        Assert.True(sparse.Hidden.allclose(fetched.Hidden, rtol: 1e-5, atol: 1e-6));
        Assert.False(sparse.Hidden.allclose(whole.Hidden, rtol: 1e-3, atol: 1e-4));
        Assert.Equal([1, 6, 8], whole.NewKey.shape);
    }

    private sealed class ConfigFolder : IDisposable
    {
        private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("llama-config-");

        public ModelConfig Read(string json)
        {
            File.WriteAllText(Path.Combine(_dir.FullName, "config.json"), json);
            return ModelFamilies.FromConfigFile(_dir.FullName);
        }

        public void Dispose() => _dir.Delete(recursive: true);
    }
}
