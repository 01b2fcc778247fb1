namespace FlexGen.Actors.Tests.Support;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using TorchSharp;

public static class Fixtures
{
    public static string OptTiny => Path.Combine(AppContext.BaseDirectory, "Fixtures", "opt-tiny");

    public static string Model => Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    public static IReadOnlyDictionary<string, Policy> Policies() => FlexGenPolicyJson.Load(Path.Combine(OptTiny, "policies.json"));

    public static long[][] Int64Rows(string file)
    {
        using var t = NpyFile.Read(Path.Combine(OptTiny, file)).to(torch.ScalarType.Int64);
        long rows = t.shape[0], cols = t.shape[1];
        var flat = t.data<long>().ToArray();
        return Enumerable.Range(0, (int)rows).Select(r => flat.Skip((int)(r * cols)).Take((int)cols).ToArray()).ToArray();
    }

    public static long[][] PromptIds() => Int64Rows("prompt_ids.npy");

    public static bool[][] PromptMask() => Mask(Int64Rows("prompt_mask.npy"));

    /// <summary>An attention mask read as int64 rows, as booleans (true = real token).</summary>
    public static bool[][] Mask(long[][] rows) => rows.Select(r => r.Select(v => v != 0).ToArray()).ToArray();

    public static long[][] HfTokens() => Int64Rows("hf_fp32_tokens.npy");

    // One temp root per test run, deleted when the test process exits: the product deletes the files it writes, but
    // the folders tests hand it as --offload-dir are the tests' own to remove.
    private static readonly Lazy<string> OffloadRoot = new(() =>
    {
        var root = Path.Combine(Path.GetTempPath(), "flexgen-actors-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(root, recursive: true); }
            catch (IOException) { } // a file still open at exit: the OS temp cleanup gets it
        };
        return root;
    });

    /// <summary>A fresh offload folder under this test run's temp root.</summary>
    public static string NewOffloadDir()
    {
        var dir = Path.Combine(OffloadRoot.Value, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}

public static class LossyComparison
{
    /// <summary>
    /// Agreement of <paramref name="actual"/> with FlexLLMGen's tokens of <paramref name="policy"/>: per sequence, steps up to
    /// and including the first whose FlexLLMGen top-2 gap (flexllmgen_top16 vals[...,0] - vals[...,1]) is under
    /// <paramref name="tolerance"/>. Returns (matching, compared).
    /// </summary>
    public static (int Matching, int Compared) Agreement(string policy, IReadOnlyList<IReadOnlyList<long>> actual, double tolerance = 0.05, int firstRow = 0, int rows = -1)
    {
        var expected = Fixtures.Int64Rows($"flexllmgen_{policy}_tokens.npy");
        using var npz = FlexGen.Tensors.Npy.NpzFile.Read(Path.Combine(Fixtures.OptTiny, "flexllmgen_top16", $"flexllmgen_{policy}_top16.npz"));
        using var vals = npz["vals"].to(TorchSharp.torch.ScalarType.Float32);
        long n = vals.shape[0], steps = vals.shape[1], width = vals.shape[2];
        var flat = vals.data<float>().ToArray();
        int matching = 0, compared = 0;
        for (int r = firstRow; r < (rows < 0 ? n : firstRow + rows); r++)
        {
            for (int t = 0; t < steps; t++)
            {
                compared++;
                if (actual[r][t] == expected[r][t])
                {
                    matching++;
                }

                long at = (r * steps + t) * width;
                if (flat[at] - flat[at + 1] < tolerance)
                {
                    break;
                }
            }
        }

        return (matching, compared);
    }
}
