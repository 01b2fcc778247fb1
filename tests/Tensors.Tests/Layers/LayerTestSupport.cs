namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Diagnostics;
using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>The bundled opt-tiny model and its reference fixtures.</summary>
public static class OptTiny
{
    public static string ModelDir => Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "opt-tiny", name);

    public static OptConfig Config() => OptConfig.FromHuggingFaceConfig(ModelDir);

    public static OptWeights LoadWeights() => OptWeights.Load(ModelDir, Config());

    public static Tensor Read(string fixtureName) => NpyFile.Read(Fixture(fixtureName));
}

/// <summary>A small random OPT for math tests that need no fixture.</summary>
public static class SmallOpt
{
    public static OptConfig Config { get; } = new()
    {
        Name = "opt-small-random",
        MaxSeqLen = 64,
        NumHiddenLayers = 2,
        NHead = 4,
        HiddenSize = 32,
        InputDim = 32,
        FfnEmbedDim = 64,
        VocabSize = 97,
    };

    /// <summary>Random weights scaled up (std 0.2) so attention is far from uniform and errors would show.</summary>
    public static OptWeights Weights(ulong seed = 7) => OptWeights.Random(Config, seed, std: 0.2);

    /// <summary>(n, len) ids in [3, vocab) with the first <c>pads[i]</c> positions of row i set to the pad id 1.</summary>
    public static (Tensor Ids, Tensor Mask) Prompts(int len, params int[] pads)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(11, CPU);
        var ids = torch.randint(3, Config.VocabSize, [pads.Length, len], ScalarType.Int64, generator: generator);
        var mask = torch.ones([pads.Length, len], ScalarType.Bool);
        for (var i = 0; i < pads.Length; i++)
        {
            if (pads[i] > 0)
            {
                ids[i].narrow(0, 0, pads[i]).fill_(Config.PadTokenId);
                mask[i].narrow(0, 0, pads[i]).fill_(false);
            }
        }

        scope.MoveToOuter(ids, mask);
        return (ids, mask);
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.to(ScalarType.Float64).sub(b.to(ScalarType.Float64)).abs().max().item<double>();
    }
}

/// <summary>The leak check of the linear kernels: bfloat16 (7, 16) @ (9, 16)^T + bias leaves only its result alive.</summary>
public static class LinearLeaks
{
    public static void AssertOnlyTheResultLives(Func<Tensor, Tensor, Tensor, Tensor?> linear)
    {
        using var x = randn(7, 16).to(ScalarType.BFloat16);
        using var weight = randn(9, 16).to(ScalarType.BFloat16);
        using var bias = randn(9).to(ScalarType.BFloat16);
        Tensor? result = null;
        Assert.Equal(1, LiveTensors.LeakedBy(() => result = linear(x, weight, bias)));
        result!.Dispose();
    }
}
