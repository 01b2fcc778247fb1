namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Tensors.Families.Opt;
using System.Text;
using FlexGen.Tensors.Policies;
using TorchSharp;
using Xunit.Abstractions;

/// <summary>
/// The outsiders' acceptance check on models the product has never seen: a Hugging Face OPT folder of another shape
/// (odd head_dim, ffn != 4h, other vocab and max positions, one layer, sharded, float32 storage, with or without
/// lm_head), `flexgen convert`, then `flexgen generate` under each policy of policies.json with prompt sets of other
/// counts (not a multiple of the block) and lengths (1, 3, 20; heavy left padding; no padding). Exact policies must
/// give Hugging Face's greedy tokens (= the reference generator's); quantized weights and sparse attention must give the
/// reference generator's tokens on the same quantized weights / sparsity; a quantized cache must run (agreement logged).
/// </summary>
public sealed class UnseenModelFixture : IAsyncLifetime
{
    /// <summary>h 48 / 4 heads (head_dim 12), 2 layers, ffn 80, vocab 300, 40 positions; tied lm_head stored; float16.</summary>
    public static readonly OptShape Odd = new("opt-odd", 48, 4, 2, 80, 300, 40);

    /// <summary>h 40 / 5 heads (head_dim 8), 1 layer, ffn 64, vocab 1000, 24 positions; 3 shards, no "model." prefix, float32.</summary>
    public static readonly OptShape OneLayer = new("opt-one-layer", 40, 5, 1, 64, 1000, 24);

    public ConvertedModel OddModel { get; private set; } = null!;

    public ConvertedModel OneLayerModel { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        OddModel = await ConvertedModel.CreateAsync(Odd, new CheckpointLayout(TiedLmHead: true));
        OneLayerModel = await ConvertedModel.CreateAsync(OneLayer,
            new CheckpointLayout(ModelPrefix: false, Shards: 3, Dtype: TorchSharp.torch.ScalarType.Float32));
    }

    public Task DisposeAsync()
    {
        OddModel?.Dispose();
        OneLayerModel?.Dispose();
        return Task.CompletedTask;
    }
}

public class UnseenModelTests(UnseenModelFixture models, ITestOutputHelper log) : IClassFixture<UnseenModelFixture>
{
    /// <summary>7 prompts (block 8) up to 20 tokens: one of 1 token, one of 3, one without padding.</summary>
    private static readonly PromptSet Mixed = new("mixed", 20, [5, 1, 20, 3, 12, 20, 8]);

    public static TheoryData<string> PolicyNames => new(OutsiderPolicies.All.Keys);

    [Theory]
    [MemberData(nameof(PolicyNames))]
    public async Task Generate_on_a_converted_model_with_head_dim_12_should_give_the_Hugging_Face_tokens(string policyName)
    {
        var policy = OutsiderPolicies.All[policyName];
        var ids = Mixed.Ids(UnseenModelFixture.Odd.Vocab);
        const int genLen = 17; // 20 + 17 <= 40 positions

        var (tokens, result) = await models.OddModel.GenerateAsync(ids, policy, genLen);

        Assert.True(tokens is not null, result.ToString());
        var hf = models.OddModel.HuggingFace(ids, genLen);
        if (OutsiderPolicies.IsLossy(policy))
        {
            log.WriteLine($"{policyName}: agreement with HF {ConvertedModel.Agreement(tokens, hf):P1}");
            Assert.All(ConvertedModel.Flatten(tokens), id => Assert.InRange(id, 0, UnseenModelFixture.Odd.Vocab - 1));
            // Quantized weights and sparse attention have an exact reference; a quantized cache has none (only agreement).
            var lossy = models.OddModel.LossyReference(ids, genLen, policy.CompressWeight, policy.AttnSparsity, cacheDtype: torch.ScalarType.Float16);
            if (!policy.CompressCache) Assert.Equal(lossy, tokens);
            else log.WriteLine($"{policyName}: agreement with the reference without cache quantization {ConvertedModel.Agreement(tokens, lossy):P1}");
        }
        else
        {
            Assert.Equal(hf, tokens);
        }
    }

    public static TheoryData<string, int, int> OneLayerCases => new()
    {
        // policy, prompt set (0: 5 prompts of width 3 with 1-token ones, 1: 7 prompts of width 20), gen len
        { "all_gpu", 0, 1 },
        { "weights_disk_cache_cpu_cpu_compute", 0, 2 },
        { "all_gpu_no_overlap_joint_layer", 1, 4 }, // 20 + 4 = the 24 positions
        { "act_on_cpu", 1, 5 }, // 20 + 5 - 1 = 24 positions read: the longest Hugging Face runs
        { "weights_split_3way_cache_cpu", 0, 17 },
        { "cache_mixed_gpu_cpu_cpu_compute", 1, 3 },
    };

    private static readonly PromptSet[] OneLayerPrompts =
    [
        new("short", 3, [1, 3, 2, 3, 1], Seed: 3),
        new("full", 20, [20, 1, 7, 19, 20, 2, 5], Seed: 4),
    ];

    [Theory]
    [MemberData(nameof(OneLayerCases))]
    public async Task Generate_on_a_sharded_float32_one_layer_model_should_give_the_Hugging_Face_tokens(string policyName, int promptSet, int genLen)
    {
        var ids = OneLayerPrompts[promptSet].Ids(UnseenModelFixture.OneLayer.Vocab);

        var (tokens, result) = await models.OneLayerModel.GenerateAsync(ids, OutsiderPolicies.All[policyName], genLen);

        Assert.True(tokens is not null, result.ToString());
        Assert.Equal(models.OneLayerModel.HuggingFace(ids, genLen), tokens);
    }

    [Fact]
    public void The_reference_generator_should_agree_with_the_Hugging_Face_oracle_on_both_shapes()
    {
        var odd = Mixed.Ids(UnseenModelFixture.Odd.Vocab);
        var hf = models.OddModel.HuggingFace(odd, 17);
        Assert.Equal(hf, models.OddModel.Reference(odd, 17));
        // The random model must not be degenerate (one repeated token), or equal tokens would prove little.
        int distinct = ConvertedModel.Flatten(hf).Distinct().Count();
        log.WriteLine($"distinct HF tokens: {distinct} of {hf.Length}");
        Assert.True(distinct >= 10, $"only {distinct} distinct tokens in {hf.Length}");
        var full = OneLayerPrompts[1].Ids(UnseenModelFixture.OneLayer.Vocab);
        Assert.Equal(models.OneLayerModel.HuggingFace(full, 4), models.OneLayerModel.Reference(full, 4));
    }

    [Fact]
    public void The_Hugging_Face_oracle_should_give_the_recorded_Hugging_Face_tokens_of_opt_tiny()
    {
        var config = FlexGen.Tensors.Families.Opt.OptConfig.FromHuggingFaceConfig(TestPaths.BundledModel);
        var shape = new OptShape("opt-tiny", config.HiddenSize, config.NHead, config.NumHiddenLayers, config.FfnEmbedDim, config.VocabSize, config.MaxSeqLen);
        var weights = new Dictionary<string, TorchSharp.torch.Tensor>();
        try
        {
            foreach (var file in Directory.GetFiles(TestPaths.BundledModel).Where(f => Path.GetFileName(f) != "config.json"))
            {
                string name = Path.GetFileName(file).Replace("decoder.layer_norm.", "decoder.final_layer_norm.", StringComparison.Ordinal);
                using var half = FlexGen.Tensors.Npy.NpyFile.Read(file);
                weights[name] = half.to_type(TorchSharp.torch.ScalarType.Float32);
            }
            Assert.Equal(Fixture.HfTokens, HfOptOracle.Greedy(weights, shape, Fixture.PromptIds, Fixture.HfTokens.GetLength(1)));
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    [Fact]
    public async Task A_bfloat16_checkpoint_should_convert_and_give_the_Hugging_Face_tokens()
    {
        var shape = new OptShape("opt-bf16", 32, 4, 1, 48, 200, 32);
        using var model = await ConvertedModel.CreateAsync(shape, new CheckpointLayout(Dtype: TorchSharp.torch.ScalarType.BFloat16));
        var ids = new PromptSet("bf16", 6, [6, 1, 4], Seed: 9).Ids(shape.Vocab);

        var (tokens, result) = await model.GenerateAsync(ids, OutsiderPolicies.All["weights_disk_cache_cpu_cpu_compute"], 9);

        Assert.True(tokens is not null, result.ToString());
        Assert.Equal(model.HuggingFace(ids, 9), tokens);
    }

    [Fact]
    public async Task Int32_input_ids_should_give_the_same_tokens_as_int64()
    {
        var ids = OneLayerPrompts[0].Ids(UnseenModelFixture.OneLayer.Vocab);
        var policy = OutsiderPolicies.All["all_gpu"];

        var (tokens, result) = await models.OneLayerModel.GenerateAsync(ids, policy, 5, TorchSharp.torch.ScalarType.Int32);

        Assert.True(tokens is not null, result.ToString());
        Assert.Equal(models.OneLayerModel.HuggingFace(ids, 5), tokens);
    }

    [Fact]
    public async Task A_gen_len_past_the_positions_should_be_a_usage_error_naming_both()
    {
        var ids = OneLayerPrompts[1].Ids(UnseenModelFixture.OneLayer.Vocab);

        var (tokens, result) = await models.OneLayerModel.GenerateAsync(ids, OutsiderPolicies.All["all_gpu"], 6); // 20 + 6 - 1 > 24

        Assert.Null(tokens);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("--gen-len 6", result.Error);
        Assert.Contains("24", result.Error);
    }
}

/// <summary>A test that runs only when FLEXGEN_SWEEP=1 (minutes of CPU).</summary>
public sealed class SweepFactAttribute : FactAttribute
{
    public SweepFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("FLEXGEN_SWEEP") != "1") Skip = "broad sweep: set FLEXGEN_SWEEP=1 to run it";
    }
}

/// <summary>Every policy x shapes x layouts x prompt sets x gen lens; collects every mismatch and failure, then fails once.</summary>
public class UnseenModelSweepTests(ITestOutputHelper log)
{
    private static readonly (OptShape Shape, CheckpointLayout Layout)[] Models =
    [
        (UnseenModelFixture.Odd, new CheckpointLayout(TiedLmHead: true)),
        (UnseenModelFixture.OneLayer, new CheckpointLayout(ModelPrefix: false, Shards: 3, Dtype: TorchSharp.torch.ScalarType.Float32)),
        (new OptShape("opt-wide-heads", 64, 2, 3, 256, 50272, 2048), new CheckpointLayout()),
        (new OptShape("opt-narrow", 24, 3, 4, 40, 64, 64), new CheckpointLayout(Shards: 2)),
        (new OptShape("opt-h36", 36, 6, 2, 100, 777, 48), new CheckpointLayout(TiedLmHead: true, ModelPrefix: false)),
        (new OptShape("opt-bf16", 32, 2, 2, 48, 512, 40), new CheckpointLayout(Dtype: TorchSharp.torch.ScalarType.BFloat16)),
    ];

    /// <summary>policies.json plus other block sizes an outsider may try (1 x 1, 3 x 3, 2 x 4, 1 x 2 offloaded).</summary>
    private static IEnumerable<(string Name, Policy Policy)> SweepPolicies()
    {
        foreach (var (name, policy) in OutsiderPolicies.All) yield return (name, policy);
        var gpu = OutsiderPolicies.All["all_gpu"];
        var disk = OutsiderPolicies.All["weights_disk_cache_cpu_cpu_compute"];
        yield return ("all_gpu 1x1", gpu with { GpuBatchSize = 1, NumGpuBatches = 1 });
        yield return ("all_gpu 3x3", gpu with { GpuBatchSize = 3, NumGpuBatches = 3 });
        yield return ("weights_disk 2x4", disk with { GpuBatchSize = 2, NumGpuBatches = 4 });
        yield return ("weights_split 1x2", OutsiderPolicies.All["weights_split_3way_cache_cpu"] with { GpuBatchSize = 1, NumGpuBatches = 2 });
    }

    private static PromptSet[] PromptSets(OptShape shape) =>
    [
        new("five-short", 3, [3, 1, 2, 3, 1], Seed: 1),
        new("seven-mixed", 20, [20, 1, 3, 20, 9, 14, 2], Seed: 2),
        new("one-full", 7, [7], Seed: 3),
        new("all-padded-heavy", 20, [1, 2, 1, 4, 3, 1, 2, 1, 1, 2], Seed: 4), // 10 prompts: more than one block
        new("near-max", shape.MaxPositions - 17, [shape.MaxPositions - 17, 4, 1, shape.MaxPositions - 18, 6], Seed: 5),
    ];

    [SweepFact]
    [Trait("Category", "Sweep")]
    public async Task Every_policy_on_every_unseen_shape_should_give_the_Hugging_Face_tokens()
    {
        var failures = new StringBuilder();
        int runs = 0;
        foreach (var (shape, layout) in Models)
        {
            using var model = await ConvertedModel.CreateAsync(shape, layout);
            foreach (var prompts in PromptSets(shape))
            {
                var ids = prompts.Ids(shape.Vocab);
                foreach (int genLen in new[] { 1, 2, 17 })
                {
                    if (ids.GetLength(1) + genLen - 1 > shape.MaxPositions) continue;
                    var hf = model.HuggingFace(ids, genLen);
                    var reference = model.Reference(ids, genLen);
                    if (ConvertedModel.Agreement(hf, reference) < 1)
                        failures.AppendLine($"REFERENCE {shape} {prompts} gen {genLen}: agreement with HF {ConvertedModel.Agreement(hf, reference):P1}");
                    foreach (var (name, policy) in SweepPolicies())
                    {
                        runs++;
                        string what = $"{name} | {shape} | {layout} | {prompts} | gen {genLen}";
                        try
                        {
                            var (tokens, result) = await model.GenerateAsync(ids, policy, genLen);
                            if (tokens is null)
                            {
                                failures.AppendLine($"FAILED {what}: {result.Error.Trim().Split('\n').LastOrDefault(l => l.StartsWith("failed", StringComparison.Ordinal)) ?? result.ToString()}");
                                continue;
                            }
                            double agreement = ConvertedModel.Agreement(tokens, hf);
                            if (OutsiderPolicies.IsLossy(policy))
                            {
                                log.WriteLine($"lossy {what}: agreement {agreement:P1}");
                                if (policy.CompressCache) continue;
                                var lossy = model.LossyReference(ids, genLen, policy.CompressWeight, policy.AttnSparsity, cacheDtype: torch.ScalarType.Float16);
                                if (ConvertedModel.Agreement(tokens, lossy) < 1)
                                    failures.AppendLine($"LOSSY MISMATCH {what}: agreement with the lossy reference {ConvertedModel.Agreement(tokens, lossy):P1}");
                            }
                            else if (agreement < 1) failures.AppendLine($"MISMATCH {what}: agreement {agreement:P1}");
                        }
                        catch (Exception ex)
                        {
                            failures.AppendLine($"THREW {what}: {ex.GetType().Name}: {ex.Message}");
                        }
                    }
                }
            }
        }
        log.WriteLine($"{runs} runs");
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [SweepFact]
    [Trait("Category", "Sweep")]
    public async Task Float32_checkpoints_that_are_not_float16_exact_report_their_agreement()
    {
        // Informational: convert stores float16 (as FlexGen), so a float32 checkpoint is rounded; HF runs the float32 weights.
        var shape = UnseenModelFixture.Odd;
        using var model = await ConvertedModel.CreateAsync(shape,
            new CheckpointLayout(Dtype: TorchSharp.torch.ScalarType.Float32, Float16Exact: false));
        var ids = PromptSets(shape)[1].Ids(shape.Vocab);
        var (tokens, result) = await model.GenerateAsync(ids, OutsiderPolicies.All["all_gpu"], 17);
        Assert.True(tokens is not null, result.ToString());
        log.WriteLine($"float32 checkpoint, all_gpu: agreement with HF float32 {ConvertedModel.Agreement(tokens, model.HuggingFace(ids, 17)):P1}");
    }
}
