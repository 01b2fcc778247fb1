namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;
using static TorchSharp.torch;

public sealed class OptWeightsTests
{
    [Fact]
    public void Load_should_read_every_weight_float16_with_its_spec_shape()
    {
        using var weights = OptWeights.Load(OptTiny.ModelDir);
        Assert.Equal("opt-tiny", weights.Config.Name);
        Assert.Equal(3, weights.Attention.Count);
        Assert.Equal(new long[] { 50272, 64 }, weights.InputEmbed.TokenEmbedding.shape);
        Assert.Equal(new long[] { 2050, 64 }, weights.InputEmbed.PositionEmbedding.shape);
        Assert.Equal(new long[] { 256, 64 }, weights.Mlp[2].Fc1Weight.shape);
        Assert.Equal(ScalarType.Float16, weights.Attention[1].QWeight.dtype);
        Assert.Same(weights.InputEmbed.TokenEmbedding, weights.OutputEmbed.TokenEmbedding);
    }

    [Fact]
    public void Load_should_name_a_missing_weight_file()
    {
        var dir = Directory.CreateTempSubdirectory("flexgen-math-");
        try
        {
            foreach (var file in Directory.GetFiles(OptTiny.ModelDir))
            {
                File.Copy(file, Path.Combine(dir.FullName, Path.GetFileName(file)));
            }

            var path = Path.Combine(dir.FullName, "decoder.layers.1.fc2.bias");
            File.Delete(path);
            var e = Assert.Throws<WeightLoadException>(() => OptWeights.Load(dir.FullName, OptTiny.Config()));
            Assert.Equal(path, e.Path);
            Assert.Contains("decoder.layers.1.fc2.bias", e.Message);
            Assert.Contains("missing", e.Message);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void Load_should_name_a_misshapen_weight_file()
    {
        var dir = Directory.CreateTempSubdirectory("flexgen-math-");
        try
        {
            foreach (var file in Directory.GetFiles(OptTiny.ModelDir))
            {
                File.Copy(file, Path.Combine(dir.FullName, Path.GetFileName(file)));
            }

            using (var wrong = torch.zeros([65], ScalarType.Float16))
            {
                NpyFile.Write(Path.Combine(dir.FullName, "decoder.layers.0.self_attn.q_proj.bias"), wrong);
            }

            var e = Assert.Throws<WeightLoadException>(() => OptWeights.Load(dir.FullName, OptTiny.Config()));
            Assert.Contains("decoder.layers.0.self_attn.q_proj.bias", e.Message);
            Assert.Contains("shape (65) disagrees", e.Message);
            Assert.Contains("needs (64)", e.Message);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void Random_weights_should_repeat_with_the_seed()
    {
        using var a = OptWeights.Random(SmallOpt.Config, 5);
        using var b = OptWeights.Random(SmallOpt.Config, 5);
        using var c = OptWeights.Random(SmallOpt.Config, 6);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(a.Mlp[1].Fc2Weight, b.Mlp[1].Fc2Weight));
        Assert.True(SmallOpt.MaxAbsDiff(a.Mlp[1].Fc2Weight, c.Mlp[1].Fc2Weight) > 0);
        Assert.Equal(ScalarType.Float16, a.OutputEmbed.LayerNormWeight.dtype);
    }

    [Fact]
    public void Random_weights_should_keep_layer_norm_weights_near_one_and_the_rest_near_zero()
    {
        using var weights = OptWeights.Random(SmallOpt.Config, 5);
        using var norm = weights.Attention[0].LayerNormWeight.to_type(ScalarType.Float32);
        using var normMean = norm.mean();
        Assert.InRange(normMean.item<float>(), 0.99f, 1.01f);
        using var fc1 = weights.Mlp[0].Fc1Weight.to_type(ScalarType.Float32);
        using var fc1Std = fc1.std();
        using var fc1Mean = fc1.mean();
        Assert.InRange(fc1Std.item<float>(), 0.015f, 0.025f);
        Assert.InRange(fc1Mean.item<float>(), -0.005f, 0.005f);
    }

    [Fact]
    public void Load_should_name_a_missing_model_folder()
    {
        var missing = Path.Combine(Path.GetTempPath(), "flexgen-no-such-model-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<WeightLoadException>(() => OptWeights.Load(missing, OptTiny.Config()));
        Assert.Equal(missing, e.Path);
        Assert.Contains("model folder does not exist", e.Message);
    }
}
