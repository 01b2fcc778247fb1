namespace FlexGen.Actors.Tests.Support;

using FlexGen.Tensors.Families.Opt;
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
    public long[][] Reference(long[][] ids, bool[][] mask, int genLen, long? stop = null) => ReferenceWithGaps(ids, mask, genLen, stop).Tokens;

    /// <summary>
    /// The reference tokens and each step's top-2 logit gap. A step whose gap is tiny can flip between any two float32
    /// evaluations (summation order depends on libtorch's threading), so comparisons stop after it.
    /// </summary>
    public (long[][] Tokens, float[][] Gaps) ReferenceWithGaps(long[][] ids, bool[][] mask, int genLen, long? stop = null)
    {
        using var weights = OptWeights.Load(Folder, Config);
        int n = ids.Length, len = ids[0].Length;
        using var idTensor = torch.tensor(ids.SelectMany(r => r).ToArray(), [n, len], torch.ScalarType.Int64);
        using var maskTensor = torch.tensor(mask.SelectMany(r => r).ToArray(), [n, len]);
        using var result = ReferenceGenerator.Generate(weights, idTensor, maskTensor,
            new GenerationSettings(genLen) { StopTokenId = checked((int?)stop) }, new ReferenceRun(ComputeSettings.Float32) { CacheDtype = torch.ScalarType.Float16, KeepLogits = true });
        var flat = result.OutputIds.data<long>().ToArray();
        var tokens = Enumerable.Range(0, n).Select(r => flat.Skip(r * genLen).Take(genLen).ToArray()).ToArray();
        var gaps = Enumerable.Range(0, n).Select(_ => Enumerable.Repeat(float.PositiveInfinity, genLen).ToArray()).ToArray();
        for (int t = 0; t < result.StepLogits.Count; t++)
        {
            using var top = result.StepLogits[t].topk(2, dim: 1).values;
            var values = top.data<float>().ToArray();
            for (int r = 0; r < n; r++)
            {
                gaps[r][t] = values[2 * r] - values[2 * r + 1];
            }
        }

        return (tokens, gaps);
    }

    /// <summary>Asserts <paramref name="actual"/> equals <paramref name="expected"/> per row up to and including the first near-tie.</summary>
    public static void AssertSameUpToNearTies<TRow>(long[][] expected, float[][] gaps, IReadOnlyList<TRow> actualRows, string what, float tie = 1e-3f)
        where TRow : IEnumerable<long>
    {
        var actual = actualRows.Select(r => r.ToArray()).ToArray();
        Xunit.Assert.Equal(expected.Length, actual.Length);
        for (int r = 0; r < expected.Length; r++)
        {
            for (int t = 0; t < expected[r].Length; t++)
            {
                Xunit.Assert.True(expected[r][t] == actual[r][t],
                    $"{what}: row {r} step {t}: {actual[r][t]} != reference {expected[r][t]} (gap {gaps[r][t]})\nexpected {string.Join(" ", expected[r])}\nactual   {string.Join(" ", actual[r])}");
                if (gaps[r][t] < tie)
                {
                    break;
                }
            }
        }
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}
