using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using TorchSharp;

namespace FlexGen.Tensors.Tests.Models;

public class OptWeightSpecsTests
{
    private static readonly string TinyModelDir = Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    // opt-tiny (models/opt-tiny/config.json): vocab 50272, hidden 64, 4 heads, 3 layers, ffn 256.
    private static readonly OptConfig Tiny = OptConfig.FromHuggingFaceConfig(TinyModelDir);

    [Fact]
    public void Layers_should_follow_FlexGen_execution_order_with_sep_layer()
    {
        var layers = OptWeightSpecs.Layers(Tiny, sepLayer: true);

        Assert.Equal(
            [
                LayerKind.InputEmbedding,
                LayerKind.Attention, LayerKind.Mlp,
                LayerKind.Attention, LayerKind.Mlp,
                LayerKind.Attention, LayerKind.Mlp,
                LayerKind.OutputEmbedding,
            ],
            layers.Select(l => l.Kind));
        Assert.Equal(Enumerable.Range(0, 8), layers.Select(l => l.Index));
        Assert.Equal([null, 0, 0, 1, 1, 2, 2, null], layers.Select(l => l.BlockIndex));
        Assert.Equal([false, true, false, true, false, true, false, false], layers.Select(l => l.HasKvCache));
        Assert.All(layers, l => Assert.Single(l.WeightGroups));
    }

    [Fact]
    public void Layers_should_join_attention_and_mlp_without_sep_layer()
    {
        var layers = OptWeightSpecs.Layers(Tiny, sepLayer: false);

        Assert.Equal(
            [
                LayerKind.InputEmbedding, LayerKind.Block, LayerKind.Block,
                LayerKind.Block, LayerKind.OutputEmbedding,
            ],
            layers.Select(l => l.Kind));
        var block1 = layers[2];
        Assert.Equal(1, block1.BlockIndex);
        Assert.True(block1.HasKvCache);
        // FlexGen places attention and MLP weights in two separate init_weight_list calls.
        Assert.Equal(2, block1.WeightGroups.Count);
        Assert.Equal(OptWeightSpecs.SelfAttention(Tiny, 1), block1.WeightGroups[0]);
        Assert.Equal(OptWeightSpecs.Mlp(Tiny, 1), block1.WeightGroups[1]);
        Assert.Equal(OptWeightSpecs.TransformerLayer(Tiny, 1), block1.Weights);
    }

    [Fact]
    public void SelfAttention_should_list_FlexGen_names_and_shapes_in_order()
    {
        var specs = OptWeightSpecs.SelfAttention(Tiny, 2);

        Assert.Equal(
            [
                "decoder.layers.2.self_attn.q_proj.weight (64, 64) Float16",
                "decoder.layers.2.self_attn.q_proj.bias (64) Float16",
                "decoder.layers.2.self_attn.k_proj.weight (64, 64) Float16",
                "decoder.layers.2.self_attn.k_proj.bias (64) Float16",
                "decoder.layers.2.self_attn.v_proj.weight (64, 64) Float16",
                "decoder.layers.2.self_attn.v_proj.bias (64) Float16",
                "decoder.layers.2.self_attn.out_proj.weight (64, 64) Float16",
                "decoder.layers.2.self_attn.out_proj.bias (64) Float16",
                "decoder.layers.2.self_attn_layer_norm.weight (64) Float16",
                "decoder.layers.2.self_attn_layer_norm.bias (64) Float16",
            ],
            specs.Select(s => s.ToString()));
    }

    [Fact]
    public void Mlp_and_embeddings_should_list_FlexGen_names_and_shapes_in_order()
    {
        Assert.Equal(
            [
                "decoder.layers.0.fc1.weight (256, 64) Float16",
                "decoder.layers.0.fc1.bias (256) Float16",
                "decoder.layers.0.fc2.weight (64, 256) Float16",
                "decoder.layers.0.fc2.bias (64) Float16",
                "decoder.layers.0.final_layer_norm.weight (64) Float16",
                "decoder.layers.0.final_layer_norm.bias (64) Float16",
            ],
            OptWeightSpecs.Mlp(Tiny, 0).Select(s => s.ToString()));
        Assert.Equal(
            [
                "decoder.embed_tokens.weight (50272, 64) Float16",
                "decoder.embed_positions.weight (2050, 64) Float16",
            ],
            OptWeightSpecs.InputEmbed(Tiny).Select(s => s.ToString()));
        Assert.Equal(
            [
                "decoder.layer_norm.weight (64) Float16",
                "decoder.layer_norm.bias (64) Float16",
                "decoder.embed_tokens.weight (50272, 64) Float16",
            ],
            OptWeightSpecs.OutputEmbed(Tiny).Select(s => s.ToString()));
    }

    [Fact]
    public void Specs_should_match_every_weight_file_of_the_bundled_opt_tiny_model()
    {
        var specs = OptWeightSpecs.Layers(Tiny, sepLayer: true).SelectMany(l => l.Weights).ToList();

        foreach (var spec in specs)
        {
            var path = Path.Combine(TinyModelDir, spec.FileName);
            Assert.True(File.Exists(path), $"missing {path}");
            var (descr, shape) = NpyHeaderText.Read(path);
            Assert.Equal("<f2", descr);
            Assert.Equal(spec.Shape, shape);
        }

        var weightFiles = Directory.GetFiles(TinyModelDir).Select(f => Path.GetFileName(f))
            .Where(f => f != "config.json").Order().ToList();
        Assert.Equal(weightFiles, specs.Select(s => s.FileName).Distinct().Order().ToList());
    }

    [Fact]
    public void Weight_spec_should_report_elements_and_float16_bytes()
    {
        var fc1 = OptWeightSpecs.Mlp(Tiny, 0)[0];

        Assert.Equal(torch.ScalarType.Float16, fc1.Dtype);
        Assert.Equal(2, fc1.Rank);
        Assert.Equal(256L * 64, fc1.ElementCount);
        Assert.Equal(256L * 64 * 2, fc1.Bytes);
        // sep and joint layouts hold the same weights: 2 embeddings (tokens counted twice, tied) + 3 blocks.
        Assert.Equal(
            OptWeightSpecs.Layers(Tiny, true).Sum(l => l.WeightBytes),
            OptWeightSpecs.Layers(Tiny, false).Sum(l => l.WeightBytes));
    }

    [Fact]
    public void Layer_index_outside_the_model_should_be_refused()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => OptWeightSpecs.SelfAttention(Tiny, 3));
        Assert.Contains("[0, 3)", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => OptWeightSpecs.Mlp(Tiny, -1));
    }

    [Fact]
    public void Weight_spec_with_an_empty_dimension_should_be_refused()
    {
        var ex = Assert.Throws<ArgumentException>(() => new WeightSpec("x.weight", [4, 0], torch.ScalarType.Float16));
        Assert.Contains("x.weight", ex.Message);
    }
}
