using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;

namespace FlexGen.Tensors.Tests.Models;

public class OptConfigTests
{
    private static readonly string TinyModelDir = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    // name, max_seq_len, layers, heads, hidden = input_dim, ffn, vocab: flexllmgen/opt_config.py get_opt_config.
    [Theory]
    [InlineData("opt-125m", 2048, 12, 12, 768, 3072, 50272)]
    [InlineData("opt-1.3b", 2048, 24, 32, 2048, 8192, 50272)]
    [InlineData("opt-2.7b", 2048, 32, 32, 2560, 10240, 50272)]
    [InlineData("opt-6.7b", 2048, 32, 32, 4096, 16384, 50272)]
    [InlineData("opt-13b", 2048, 40, 40, 5120, 20480, 50272)]
    [InlineData("opt-30b", 2048, 48, 56, 7168, 28672, 50272)]
    [InlineData("opt-66b", 2048, 64, 72, 9216, 36864, 50272)]
    [InlineData("opt-175b", 2048, 96, 96, 12288, 49152, 50272)]
    [InlineData("galactica-30b", 2048, 48, 56, 7168, 28672, 50000)]
    public void Preset_should_carry_FlexGen_numbers(
        string name, int maxSeqLen, int layers, int heads, int hidden, int ffn, int vocab)
    {
        var c = OptConfig.FromPreset(name);

        Assert.Equal(name, c.Name);
        Assert.Equal((maxSeqLen, layers, heads, hidden, hidden, ffn, vocab),
            (c.MaxSeqLen, c.NumHiddenLayers, c.NHead, c.HiddenSize, c.InputDim, c.FfnEmbedDim, c.VocabSize));
        Assert.Equal((1, 2, 2, "relu"), (c.PadTokenId, c.BosTokenId, c.EosTokenId, c.ActivationFunction));
        Assert.Equal(hidden / heads, c.HeadDim);
    }

    [Theory]
    [InlineData(2040, 9, true)]   // 2040 + 9 - 1 = 2048 positions: exactly max_seq_len
    [InlineData(2040, 10, false)] // 2049 positions
    [InlineData(1, 2048, true)]
    [InlineData(2048, 1, true)]
    [InlineData(2048, 2, false)]
    public void Fits_should_allow_prompt_plus_gen_minus_one_positions_up_to_max_seq_len(int promptLen, int genLen, bool fits)
    {
        Assert.Equal(fits, OptConfig.FromPreset("opt-6.7b").Fits(promptLen, genLen));
    }

    [Fact]
    public void Preset_names_should_list_the_nine_runnable_presets()
    {
        Assert.Equal(
            ["opt-125m", "opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b", "opt-30b", "opt-66b", "opt-175b", "galactica-30b"],
            OptConfig.PresetNames);
    }

    [Theory]
    [InlineData("facebook/opt-6.7b", "opt-6.7b")]
    [InlineData("OPT-6.7B", "opt-6.7b")]
    [InlineData("facebook/opt-iml-max-30b", "opt-iml-max-30b")]
    public void Preset_lookup_should_accept_prefix_case_and_iml_variants(string input, string expectedName)
    {
        var c = OptConfig.FromPreset(input);

        Assert.Equal(expectedName, c.Name);
        Assert.Equal(expectedName.Contains("30b") ? 7168 : 4096, c.HiddenSize);
    }

    [Theory]
    [InlineData("opt-350m")]
    [InlineData("facebook/opt-350m")]
    public void Opt_350m_should_be_refused_with_the_architecture_reason(string name)
    {
        var ex = Assert.Throws<UnsupportedModelException>(() => OptConfig.FromPreset(name));

        Assert.Equal("opt-350m", ex.ModelName);
        Assert.Contains("word_embed_proj_dim 512 != hidden_size 1024", ex.Message);
        Assert.Contains("project_in / project_out", ex.Message);
        Assert.Contains("do_layer_norm_before = false", ex.Message);
    }

    [Fact]
    public void Unknown_preset_should_be_refused_listing_the_known_presets()
    {
        var ex = Assert.Throws<UnknownModelException>(() => OptConfig.FromPreset("facebook/opt-7b"));

        Assert.Equal("facebook/opt-7b", ex.Name);
        Assert.StartsWith("Unknown model 'facebook/opt-7b'. Known presets: opt-125m, opt-1.3b, opt-2.7b, opt-6.7b, " +
            "opt-13b, opt-30b, opt-66b, opt-175b, galactica-30b", ex.Message);
    }

    [Fact]
    public void Byte_formulas_should_match_a_hand_computation_for_opt_6_7b()
    {
        var c = OptConfig.FromPreset("opt-6.7b");
        // h = 4096, layers = 32, vocab = 50272. Per layer (FlexGen's model_bytes terms):
        //   h(3h+1) = 4096 * 12289 = 50,335,744      h(h+1)  = 4096 * 4097  = 16,781,312
        //   h(4h+1) = 4096 * 16385 = 67,112,960      4h(h+1) = 16384 * 4097 = 67,125,248
        //   4h      = 16,384
        //   sum = 201,371,648; * 32 layers = 6,443,892,736
        // embedding vocab (h+1) = 50272 * 4097 = 205,964,384
        // parameters 6,649,857,120; * 2 bytes = 13,299,714,240
        Assert.Equal(13_299_714_240L, c.ModelBytes());
        // cache_bytes(64, 544) = 2 * 64 * 544 * 32 * 4096 * 2 = 18,253,611,008
        Assert.Equal(18_253_611_008L, c.CacheBytes(64, 544));
        // hidden_bytes(64, 544) = 64 * 544 * 4096 * 2 = 285,212,672
        Assert.Equal(285_212_672L, c.HiddenBytes(64, 544));
    }

    [Fact]
    public void Byte_formulas_should_match_a_hand_computation_for_opt_175b()
    {
        var c = OptConfig.FromPreset("facebook/opt-175b");
        // h = 12288 (h^2 = 150,994,944), layers = 96, vocab = 50272. Per layer:
        //   h(3h+1) = 452,984,832 + 12,288 = 452,997,120     h(h+1)  = 150,994,944 + 12,288 = 151,007,232
        //   h(4h+1) = 603,979,776 + 12,288 = 603,992,064     4h(h+1) = 4 * 151,007,232     = 604,028,928
        //   4h      = 49,152
        //   sum = 1,812,074,496; * 96 layers = 173,959,151,616
        // embedding 50272 * 12289 = 617,792,608
        // parameters 174,576,944,224; * 2 bytes = 349,153,888,448
        Assert.Equal(349_153_888_448L, c.ModelBytes());
        // cache_bytes(32, 544) = 2 * 32 * 544 * 96 * 12288 * 2 = 82,141,249,536
        Assert.Equal(82_141_249_536L, c.CacheBytes(32, 544));
        // hidden_bytes(32, 544) = 32 * 544 * 12288 * 2 = 427,819,008
        Assert.Equal(427_819_008L, c.HiddenBytes(32, 544));
    }

    [Fact]
    public void Hugging_Face_config_of_the_bundled_model_should_load()
    {
        var c = OptConfig.FromHuggingFaceConfig(TinyModelDir);

        Assert.Equal("opt-tiny", c.Name);
        Assert.Equal((2048, 3, 4, 64, 64, 256, 50272),
            (c.MaxSeqLen, c.NumHiddenLayers, c.NHead, c.HiddenSize, c.InputDim, c.FfnEmbedDim, c.VocabSize));
        Assert.Equal((1, 2, 2), (c.PadTokenId, c.BosTokenId, c.EosTokenId));
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(c, OptConfig.FromHuggingFaceConfig(Path.Combine(TinyModelDir, "config.json")));
        Assert.Equal(c, OptConfig.FromNameOrPath(TinyModelDir));
        Assert.Equal(OptConfig.FromPreset("opt-1.3b"), OptConfig.FromNameOrPath("facebook/opt-1.3b"));
    }

    [Theory]
    [InlineData("model_type", "\"llama\"", "model_type = \"llama\": only OPT models")]
    [InlineData("architectures", "[\"LlamaForCausalLM\"]", "architectures = \"LlamaForCausalLM\": only OPT architectures")]
    [InlineData("do_layer_norm_before", "false", "do_layer_norm_before = false: post-layer-norm")]
    [InlineData("activation_function", "\"gelu\"", "activation_function = \"gelu\": only ReLU")]
    [InlineData("word_embed_proj_dim", "32", "word_embed_proj_dim = 32: a projected embedding")]
    [InlineData("_remove_final_layer_norm", "true", "_remove_final_layer_norm = true")]
    [InlineData("enable_bias", "false", "enable_bias = false")]
    [InlineData("layer_norm_elementwise_affine", "false", "layer_norm_elementwise_affine = false")]
    [InlineData("tie_word_embeddings", "false", "tie_word_embeddings = false: an untied output projection")]
    public void Hugging_Face_config_outside_the_engine_should_be_refused(string key, string json, string expected)
    {
        using var dir = new TempConfig(key, json);

        var ex = Assert.Throws<UnsupportedModelException>(() => OptConfig.FromHuggingFaceConfig(dir.Path));

        Assert.Equal(key, ex.Key);
        Assert.Contains(expected, ex.Message);
        Assert.Contains(Path.Combine(dir.Path, "config.json"), ex.Message);
    }

    [Theory]
    [InlineData("hidden_size", "\"64\"", "must be an integer")]
    [InlineData("num_hidden_layers", "0", "must be >= 1")]
    [InlineData("num_attention_heads", "5", "hidden_size 64 is not a multiple of num_attention_heads 5")]
    [InlineData("do_layer_norm_before", "\"yes\"", "must be true or false")]
    [InlineData("ffn_dim", null, "required key is missing")]
    public void Malformed_Hugging_Face_config_should_be_refused_naming_file_and_key(string key, string? json, string expected)
    {
        using var dir = new TempConfig(key, json);

        var ex = Assert.Throws<ModelConfigException>(() => OptConfig.FromHuggingFaceConfig(dir.Path));

        Assert.Equal(key, ex.Key);
        Assert.Equal(Path.Combine(dir.Path, "config.json"), ex.Path);
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void Missing_Hugging_Face_config_should_be_refused_naming_the_file()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"no-such-{Guid.NewGuid():N}", "config.json");
        var ex = Assert.Throws<ModelConfigException>(() => OptConfig.FromHuggingFaceConfig(missing));
        Assert.Equal(missing, ex.Path);
    }

    /// <summary>A copy of the bundled config.json with one key replaced (or removed when null).</summary>
    private sealed class TempConfig : IDisposable
    {
        public TempConfig(string key, string? jsonValue)
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"optcfg-{Guid.NewGuid():N}");
            Directory.CreateDirectory(Path);
            var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(TinyModelDir, "config.json")))!.AsObject();
            node.Remove(key);
            if (jsonValue is not null) node[key] = System.Text.Json.Nodes.JsonNode.Parse(jsonValue);
            File.WriteAllText(System.IO.Path.Combine(Path, "config.json"), node.ToJsonString());
        }

        public string Path { get; }

        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
