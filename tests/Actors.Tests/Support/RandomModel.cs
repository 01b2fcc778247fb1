namespace FlexGen.Actors.Tests.Support;

using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>A small random OPT model written in FlexGen's layout to a temp folder (deleted on dispose).</summary>
public sealed class RandomModel : IDisposable
{
    public RandomModel(int layers = 4, ulong seed = 7)
    {
        Config = new OptConfig
        {
            Name = "opt-random",
            MaxSeqLen = 64,
            NumHiddenLayers = layers,
            NHead = 4,
            HiddenSize = 64,
            InputDim = 64,
            FfnEmbedDim = 256,
            VocabSize = 512,
        };
        Folder = Path.Combine(Path.GetTempPath(), "flexgen-actors-tests", "model-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
        using var weights = OptWeights.Random(Config, seed, std: 0.1);
        foreach (var spec in OptWeightSpecs.Layers(Config, sepLayer: true).SelectMany(l => l.Weights).DistinctBy(s => s.FileName))
        {
            NpyFile.Write(Path.Combine(Folder, spec.FileName), weights[spec.FileName]);
        }
    }

    public OptConfig Config { get; }

    public string Folder { get; }

    /// <summary>(n, len) left-padded prompts (row r has r % 3 pads) and their masks.</summary>
    public (long[][] Ids, bool[][] Mask) Prompts(int n, int len, int seed = 3)
    {
        var random = new Random(seed);
        var ids = new long[n][];
        var mask = new bool[n][];
        for (int r = 0; r < n; r++)
        {
            int pads = r % 3;
            ids[r] = Enumerable.Range(0, len).Select(c => c < pads ? (long)Config.PadTokenId : random.Next(3, Config.VocabSize)).ToArray();
            mask[r] = Enumerable.Range(0, len).Select(c => c >= pads).ToArray();
        }

        return (ids, mask);
    }

    /// <summary>The reference generator's tokens (float32 compute, float16 cache as the pipeline stores it).</summary>
    public long[][] Reference(long[][] ids, bool[][] mask, int genLen, long? stop = null)
    {
        using var weights = OptWeights.Load(Folder, Config);
        int n = ids.Length, len = ids[0].Length;
        using var idTensor = torch.tensor(ids.SelectMany(r => r).ToArray(), [n, len], torch.ScalarType.Int64);
        using var maskTensor = torch.tensor(mask.SelectMany(r => r).ToArray(), [n, len]);
        using var result = ReferenceGenerator.Generate(weights, idTensor, maskTensor,
            new GenerationOptions(genLen, ComputeSettings.Float32) { CacheDtype = torch.ScalarType.Float16, StopTokenId = stop });
        var flat = result.OutputIds.data<long>().ToArray();
        return Enumerable.Range(0, n).Select(r => flat.Skip(r * genLen).Take(genLen).ToArray()).ToArray();
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}
