namespace FlexGen.Host.Tests.UnseenModels;

using FlexGen.Host.Checkpoints;
using FlexGen.Tensors.Families.Llama;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using TorchSharp;
using Xunit.Abstractions;

/// <summary>
/// Held-out Llama-family models the product has never seen, of other shapes than llama-tiny: another GQA ratio with
/// llama3 rope scaling, a tied head with head_dim given and != hidden / heads (MHA), Qwen2 with q/k/v biases (tied),
/// and a sharded BF16 checkpoint with one KV head. Each is written as a Hugging Face folder, converted with
/// `flexgen convert`, generated with `flexgen generate` under several policies, and compared with the plain
/// Hugging Face oracle (<see cref="HfLlamaOracle"/>).
/// </summary>
public sealed class LlamaUnseenModelFixture : IAsyncLifetime
{
    public static readonly IReadOnlyDictionary<string, (LlamaShape Shape, CheckpointLayout Layout)> Models =
        new Dictionary<string, (LlamaShape, CheckpointLayout)>
        {
            // GQA 8 / 2 (ratio 4), head_dim 12; llama3 scaling with original 32: wavelengths 6.3 (kept), 29 (smoothed), 135+ (divided).
            ["llama-gqa4-llama3"] = (new LlamaShape("llama-gqa4-llama3", "llama", 96, 8, 2, 2, 160, 300, 64)
            {
                RopeScaling = new Llama3Rope(8.0, 1.0, 4.0, 32), RmsNormEps = 1e-5,
            }, new CheckpointLayout()),
            // MHA, head_dim 16 given while hidden / heads = 12, tied head (no lm_head.weight), float32 storage.
            ["llama-tied-head-dim-16"] = (new LlamaShape("llama-tied-head-dim-16", "llama", 48, 4, 4, 2, 128, 256, 64)
            {
                HeadDimKey = 16, Tied = true, PadTokenIdKey = 5,
            }, new CheckpointLayout(Dtype: torch.ScalarType.Float32)),
            // Qwen2: q/k/v biases, GQA 4 / 2, tied as the small Qwen2 models, no pad id (pad = eos = bos), theta 1e6.
            ["qwen2-bias-tied"] = (new LlamaShape("qwen2-bias-tied", "qwen2", 64, 4, 2, 2, 160, 320, 64)
            {
                Tied = true, RopeTheta = 1_000_000, BosTokenId = 3, EosTokenId = 3, PadTokenIdKey = null,
            }, new CheckpointLayout()),
            // BF16 in 3 shards, one KV head (ratio 4), 3 layers, Llama 3 style (theta 5e5, llama3 x32 from 16, no pad id),
            // its config.json as transformers v5 writes it (rope_parameters).
            ["llama-bf16-sharded"] = (new LlamaShape("llama-bf16-sharded", "llama", 64, 4, 1, 3, 128, 400, 64)
            {
                RopeTheta = 500_000, RopeScaling = new Llama3Rope(32.0, 1.0, 4.0, 16), RmsNormEps = 1e-5, PadTokenIdKey = null,
                TransformersV5Config = true,
            }, new CheckpointLayout(Shards: 3, Dtype: torch.ScalarType.BFloat16)),
        };

    public Dictionary<string, ConvertedLlamaModel> Converted { get; } = [];

    public async Task InitializeAsync()
    {
        foreach (var (name, (shape, layout)) in Models)
            Converted[name] = await ConvertedLlamaModel.CreateAsync(shape, layout);
    }

    public Task DisposeAsync()
    {
        foreach (var model in Converted.Values) model.Dispose();
        return Task.CompletedTask;
    }
}

public class LlamaUnseenModelTests(LlamaUnseenModelFixture models, ITestOutputHelper log) : IClassFixture<LlamaUnseenModelFixture>
{
    /// <summary>7 prompts (not a multiple of the blocks) up to 12 tokens: one of 1 token, one of 3, two without padding.</summary>
    private static readonly LlamaPromptSet Mixed = new("mixed", 12, [5, 1, 12, 3, 9, 12, 7]);

    private const int GenLen = 6;

    /// <summary>Steps whose oracle top-2 gap is below this may flip through the float16 KV cache; comparison stops there.</summary>
    private const double GapTolerance = 0.02;

    public static readonly IReadOnlyDictionary<string, Policy> Policies = new Dictionary<string, Policy>
    {
        ["all_gpu"] = Policy.FromPercent([100, 0, 100, 0, 100, 0], 4, 2),
        ["weights_disk_cache_cpu_cpu_compute"] = Policy.FromPercent([0, 0, 0, 100, 100, 0], 4, 2) with { CpuCacheCompute = true },
        ["weights_and_cache_three_tiers_cpu_compute"] = Policy.FromPercent([30, 30, 30, 40, 100, 0], 4, 2) with { CpuCacheCompute = true },
        ["cache_three_tiers_act_cpu"] = Policy.FromPercent([100, 0, 40, 30, 0, 100], 2, 2),
        ["three_batches_no_overlap_joint_layer"] = Policy.FromPercent([0, 100, 100, 0, 100, 0], 2, 3) with { Overlap = false, SepLayer = false },
    };

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in LlamaUnseenModelFixture.Models.Keys)
            foreach (var policy in Policies.Keys)
                data.Add(model, policy);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Generate_on_a_converted_unseen_llama_model_should_give_the_Hugging_Face_tokens(string modelName, string policyName)
    {
        var model = models.Converted[modelName];
        var (ids, _) = Mixed.Make(model.Shape);

        var (tokens, result) = await model.GenerateAsync(ids, Policies[policyName], GenLen);

        Assert.True(tokens is not null, result.ToString());
        var hf = model.HuggingFace(Mixed, GenLen);
        var (mismatches, compared) = ConvertedLlamaModel.Compare(hf, tokens, GapTolerance);
        log.WriteLine($"{model.Shape} | {policyName}: {compared - mismatches.Count} of {compared} compared tokens equal ({hf.Tokens.Length} generated)");
        Assert.True(mismatches.Count == 0, $"{model.Shape} | {policyName}:\n{string.Join("\n", mismatches)}");
        Assert.True(compared >= hf.Tokens.Length * 3 / 4, $"only {compared} of {hf.Tokens.Length} tokens are clear of near-ties");
    }

    [Theory]
    [MemberData(nameof(ModelNames))]
    public void The_oracle_tokens_should_not_be_degenerate_and_the_family_reference_should_agree(string modelName)
    {
        var model = models.Converted[modelName];
        var hf = model.HuggingFace(Mixed, GenLen);
        int distinct = ConvertedModel.Flatten(hf.Tokens).Distinct().Count();
        log.WriteLine($"{model.Shape}: {distinct} distinct of {hf.Tokens.Length}; smallest top-2 gap {hf.Top2Gap.Cast<float>().Min():G3}");
        log.WriteLine(model.ConvertOutput);
        Assert.True(distinct >= 10, $"only {distinct} distinct tokens in {hf.Tokens.Length}");

        // The family's plain generator (float32 cache) on the converted folder: the layer math alone, no pipeline.
        var config = (LlamaConfig)ModelFamilies.FromConfigFile(model.Folder);
        var weights = LlamaReference.LoadWeights(config, model.Folder);
        try
        {
            var (ids, mask) = Mixed.Make(model.Shape);
            using var prompt = torch.tensor(ConvertedModel.Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]);
            using var maskTensor = torch.tensor(mask.Cast<bool>().ToArray(), [ids.GetLength(0), ids.GetLength(1)]);
            var (output, _) = LlamaReference.Generate(config, weights, prompt, maskTensor, new GenerationSettings(GenLen), ComputeSettings.Float32);
            using (output)
            {
                var (mismatches, compared) = ConvertedLlamaModel.Compare(hf, ConvertedModel.ToMatrix(output), 1e-3);
                Assert.True(mismatches.Count == 0, $"{model.Shape} (family reference, {compared} compared):\n{string.Join("\n", mismatches)}");
            }
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    public static TheoryData<string> ModelNames() => new(LlamaUnseenModelFixture.Models.Keys);

    private static string LlamaTiny(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "llama-tiny", name);

    [Fact]
    public void The_oracle_should_give_the_recorded_tokens_and_prefill_logits_of_llama_tiny()
    {
        var shape = LlamaShape.FromConfigJson(LlamaTiny(Path.Combine("hf-bf16", "config.json")));
        var weights = new Dictionary<string, torch.Tensor>();
        try
        {
            using (var checkpoint = SafetensorsCheckpoint.Open(LlamaTiny("hf-bf16")))
            {
                foreach (var name in checkpoint.TensorNames)
                {
                    using var stored = checkpoint.Read(name);
                    weights[name.StartsWith("model.", StringComparison.Ordinal) ? name["model.".Length..] : name] = stored.to_type(torch.ScalarType.Float32);
                }
            }
            var ids = Fixture.ReadInt64Matrix(LlamaTiny("prompt_ids.npy"));
            var maskLongs = Fixture.ReadInt64Matrix(LlamaTiny("prompt_mask.npy"));
            var mask = new bool[ids.GetLength(0), ids.GetLength(1)];
            for (int r = 0; r < ids.GetLength(0); r++)
                for (int c = 0; c < ids.GetLength(1); c++)
                    mask[r, c] = maskLongs[r, c] != 0;
            var expected = Fixture.ReadInt64Matrix(LlamaTiny("ref_fp32_tokens.npy"));

            var result = HfLlamaOracle.Greedy(weights, shape, ids, mask, expected.GetLength(1));

            Assert.Equal(expected, result.Tokens);
            using var idsTensor = torch.tensor(ConvertedModel.Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]);
            using var maskTensor = torch.tensor(mask.Cast<bool>().ToArray(), [ids.GetLength(0), ids.GetLength(1)]);
            using var logits = HfLlamaOracle.LastLogits(weights, shape, idsTensor, maskTensor);
            using var reference = NpyFile.Read(LlamaTiny("ref_prefill_last_logits.npy"));
            double maxDiff = logits.sub(reference).abs().max().item<float>();
            log.WriteLine($"prefill logits: max |oracle - reference| = {maxDiff:G3}");
            Assert.True(maxDiff < 1e-4, $"max |oracle - reference| = {maxDiff}");
            using var gaps = NpyFile.Read(LlamaTiny("ref_fp32_top2_gap.npy"));
            using var ours = torch.tensor(result.Top2Gap.Cast<float>().ToArray(), gaps.shape);
            Assert.True(ours.sub(gaps).abs().max().item<float>() < 1e-4);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }
}

/// <summary>
/// Every exact policy x more Llama-family shapes x prompt sets x gen lens, through the CLI; collects every mismatch and
/// failure, then fails once. Runs only when FLEXGEN_SWEEP=1 (minutes of CPU).
/// </summary>
public class LlamaUnseenModelSweepTests(ITestOutputHelper log)
{
    private static IEnumerable<(LlamaShape Shape, CheckpointLayout Layout)> Models()
    {
        foreach (var model in LlamaUnseenModelFixture.Models.Values) yield return model;
        // GQA 6 / 2 (ratio 3), head_dim 10 given (hidden 40 is no multiple of 6), llama3 scaling, attention_bias (q/k/v/o biases).
        yield return (new LlamaShape("llama-gqa3-head-dim-10-bias", "llama", 40, 6, 2, 2, 96, 500, 48)
        {
            HeadDimKey = 10, RopeScaling = new Llama3Rope(8.0, 1.0, 4.0, 16), AttentionBias = true,
        }, new CheckpointLayout(Shards: 2));
        // Qwen2 untied (as the 7B), 7 query heads on one KV head, a pad id of its own.
        yield return (new LlamaShape("qwen2-untied-gqa7", "qwen2", 56, 7, 1, 2, 100, 600, 48)
        {
            RopeTheta = 1_000_000, BosTokenId = 5, EosTokenId = 6, PadTokenIdKey = 7,
        }, new CheckpointLayout(ModelPrefix: true, Dtype: torch.ScalarType.BFloat16));
        // One layer, MHA, tied, float32 storage without the "model." prefix, 24 positions.
        yield return (new LlamaShape("llama-one-layer-tied", "llama", 32, 2, 2, 1, 64, 1000, 24) { Tied = true },
            new CheckpointLayout(ModelPrefix: false, Dtype: torch.ScalarType.Float32));
    }

    private static IEnumerable<(string Name, Policy Policy)> SweepPolicies()
    {
        foreach (var (name, policy) in LlamaUnseenModelTests.Policies) yield return (name, policy);
        yield return ("all_gpu 1x1", Policy.FromPercent([100, 0, 100, 0, 100, 0], 1, 1));
        yield return ("all_gpu 3x3", Policy.FromPercent([100, 0, 100, 0, 100, 0], 3, 3));
        yield return ("weights_disk 2x4 cpu compute", Policy.FromPercent([0, 0, 0, 100, 100, 0], 2, 4) with { CpuCacheCompute = true });
        yield return ("cache_mixed_gpu_cpu_cpu_compute", Policy.FromPercent([100, 0, 50, 50, 100, 0], 4, 2) with { CpuCacheCompute = true });
        yield return ("cache 33/33/34 3x2", Policy.FromPercent([100, 0, 33, 33, 100, 0], 3, 2));
        yield return ("cache 33/33/34 3x2 cpu compute", Policy.FromPercent([100, 0, 33, 33, 100, 0], 3, 2) with { CpuCacheCompute = true });
        yield return ("act_on_disk", Policy.FromPercent([100, 0, 100, 0, 0, 0], 4, 2));
        yield return ("weights_split_3way no overlap", Policy.FromPercent([30, 30, 0, 100, 100, 0], 4, 2) with { Overlap = false });
        yield return ("all_cpu cpu compute", Policy.FromPercent([0, 100, 0, 100, 0, 100], 4, 2) with { CpuCacheCompute = true, PinWeight = false });
    }

    private static LlamaPromptSet[] PromptSets(LlamaShape shape) =>
    [
        new("five-short", 3, [3, 1, 2, 3, 1], Seed: 1),
        new("seven-mixed", 12, [5, 1, 12, 3, 9, 12, 7], Seed: 2),
        new("one-full", 7, [7], Seed: 3),
        new("ten-heavy-padded", 20, [1, 2, 1, 4, 3, 1, 2, 1, 1, 20], Seed: 4),
        new("near-max", shape.MaxPositions - 9, [shape.MaxPositions - 9, 4, 1, shape.MaxPositions - 10, 6], Seed: 5),
    ];

    [SweepFact]
    [Trait("Category", "Sweep")]
    public async Task Every_exact_policy_on_every_unseen_llama_shape_should_give_the_Hugging_Face_tokens()
    {
        var failures = new System.Text.StringBuilder();
        int runs = 0, compared = 0, generated = 0;
        foreach (var (shape, layout) in Models())
        {
            using var model = await ConvertedLlamaModel.CreateAsync(shape, layout);
            foreach (var prompts in PromptSets(shape))
            {
                var (ids, _) = prompts.Make(shape);
                foreach (int genLen in new[] { 1, 2, 10 })
                {
                    if (ids.GetLength(1) + genLen - 1 > shape.MaxPositions) continue;
                    var hf = model.HuggingFace(prompts, genLen);
                    foreach (var (name, policy) in SweepPolicies())
                    {
                        runs++;
                        string what = $"{name} | {shape} | {layout} | {prompts} | gen {genLen}";
                        try
                        {
                            var (tokens, result) = await model.GenerateAsync(ids, policy, genLen);
                            if (tokens is null)
                            {
                                failures.AppendLine($"FAILED {what}: {result}");
                                continue;
                            }
                            var (mismatches, n) = ConvertedLlamaModel.Compare(hf, tokens, 0.02);
                            compared += n;
                            generated += hf.Tokens.Length;
                            if (mismatches.Count > 0) failures.AppendLine($"MISMATCH {what}:\n  {string.Join("\n  ", mismatches)}");
                        }
                        catch (Exception ex)
                        {
                            failures.AppendLine($"THREW {what}: {ex}");
                        }
                    }
                }
            }
        }
        log.WriteLine($"{runs} runs, {compared} of {generated} tokens compared");
        Assert.True(failures.Length == 0, failures.ToString());
    }
}
