namespace FlexGen.Actors.Tests.Support;

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

    public static bool[][] PromptMask() => Int64Rows("prompt_mask.npy").Select(r => r.Select(v => v != 0).ToArray()).ToArray();

    public static long[][] HfTokens() => Int64Rows("hf_fp32_tokens.npy");

    /// <summary>A fresh offload folder under the test's temp dir.</summary>
    public static string NewOffloadDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "flexgen-actors-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
