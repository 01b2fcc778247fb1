namespace FlexGen.Host.Tests;

using System.Globalization;
using FlexGen.Tensors.Policies;

/// <summary>
/// The acceptance command (`generate --model ... --input-ids ... --output-ids ... --compute-dtype float32`) under
/// every exact policy of policies.json (no compression, dense attention), through the CLI: the Hugging Face tokens.
/// (Lossy policies are checked against FlexLLMGen's tokens by the pipeline's own tests.)
/// </summary>
public class PolicyMatrixTests
{
    private static readonly IReadOnlyDictionary<string, Policy> Policies = FlexGenPolicyJson.Load(TestPaths.Fixture("policies.json"));

    public static TheoryData<string> ExactPolicies => new(Policies.Where(p => !IsLossy(p.Value)).Select(p => p.Key));

    private static bool IsLossy(Policy p) => p.CompressWeight || p.CompressCache || p.AttnSparsity < 1;

    /// <summary>FlexGen's flags for a policy, as a user would type them.</summary>
    public static string[] Flags(Policy p) =>
    [
        "--gpu-batch-size", p.GpuBatchSize.ToString(CultureInfo.InvariantCulture),
        "--num-gpu-batches", p.NumGpuBatches.ToString(CultureInfo.InvariantCulture),
        "--percent", .. p.Percent.Select(x => x.ToString(CultureInfo.InvariantCulture)),
        "--overlap", Bool(p.Overlap), "--sep-layer", Bool(p.SepLayer), "--pin-weight", Bool(p.PinWeight),
        "--cpu-cache-compute", Bool(p.CpuCacheCompute),
        "--attn-sparsity", p.AttnSparsity.ToString(CultureInfo.InvariantCulture),
        "--compress-weight", Bool(p.CompressWeight), "--compress-cache", Bool(p.CompressCache),
    ];

    private static string Bool(bool b) => b ? "true" : "false";

    private static async Task<long[,]> GenerateAsync(string policyName, TempFolder folder)
    {
        string output = folder.File("out.npy");
        var result = await CliRunner.RunAsync([
            "generate", "--model", TestPaths.BundledModel, "--input-ids", TestPaths.Fixture("prompt_ids.npy"),
            "--output-ids", output, "--compute-dtype", "float32", "--offload-dir", folder.File("offload"), "--trace", "",
            .. Flags(Policies[policyName])]);
        Assert.True(result.ExitCode == 0, result.ToString());
        return Fixture.ReadInt64Matrix(output);
    }

    [Theory]
    [MemberData(nameof(ExactPolicies))]
    public async Task Generate_under_an_exact_policy_should_give_the_Hugging_Face_tokens(string policy)
    {
        using var folder = new TempFolder();
        Assert.Equal(Fixture.HfTokens, await GenerateAsync(policy, folder));
    }
}
