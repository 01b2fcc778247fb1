namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Layers;
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

            File.Delete(Path.Combine(dir.FullName, "decoder.layers.1.fc2.bias"));
            var e = Assert.Throws<FileNotFoundException>(() => OptWeights.Load(dir.FullName, OptTiny.Config()));
            Assert.Contains("decoder.layers.1.fc2.bias", e.Message);
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

            var e = Assert.Throws<InvalidDataException>(() => OptWeights.Load(dir.FullName, OptTiny.Config()));
            Assert.Contains("decoder.layers.0.self_attn.q_proj.bias", e.Message);
            Assert.Contains("(65)", e.Message);
            Assert.Contains("must be (64)", e.Message);
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
}
