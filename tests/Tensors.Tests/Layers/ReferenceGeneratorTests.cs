namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Diagnostics;
using FlexGen.Tensors.Layers;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

/// <summary>The bundled opt-tiny model, loaded once for the generator tests.</summary>
public sealed class OptTinyModel : IDisposable
{
    public OptWeights Weights { get; } = OptTiny.LoadWeights();

    public void Dispose() => Weights.Dispose();
}

public sealed class ReferenceGeneratorTests(OptTinyModel model, ITestOutputHelper output) : IClassFixture<OptTinyModel>
{
    private const int GenLen = 10;

    [Fact]
    public void Float32_generation_should_reproduce_the_hugging_face_tokens_and_prefill_logits()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var mask = OptTiny.Read("prompt_mask.npy");
        var expectedTokens = OptTiny.Read("hf_fp32_tokens.npy");
        var expectedLogits = OptTiny.Read("hf_fp32_prefill_logits.npy");

        using var result = ReferenceGenerator.Generate(model.Weights, ids, mask,
            new GenerationSettings(GenLen), new ReferenceRun(ComputeSettings.Float32) { KeepLogits = true });

        Assert.Equal(new long[] { 8, GenLen }, result.OutputIds.shape);
        Assert.Equal(expectedTokens.data<long>().ToArray(), result.OutputIds.data<long>().ToArray());
        double maxDiff = SmallOpt.MaxAbsDiff(result.StepLogits[0], expectedLogits);
        output.WriteLine($"float32: 80/80 tokens equal; prefill logits max |diff| = {maxDiff:E3}");
        Assert.True(maxDiff < 1e-3, $"prefill logits max |diff| {maxDiff}");
        Assert.Equal(GenLen, result.StepLogits.Count);
    }

    [Fact]
    public void Float32_generation_should_match_the_hugging_face_top8_logits_at_every_step()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var topIds = OptTiny.Read("hf_fp32_top8_ids.npy"); // (8, 10, 8)
        var topLogits = OptTiny.Read("hf_fp32_top8_logits.npy");
        using var result = ReferenceGenerator.Generate(model.Weights, ids, null,
            new GenerationSettings(GenLen), new ReferenceRun(ComputeSettings.Float32) { KeepLogits = true });
        // Logits of every step gathered at Hugging Face's top-8 ids: (8, 10, 8).
        var ours = torch.stack(result.StepLogits, 1).gather(2, topIds.to(ScalarType.Int64));
        double maxDiff = SmallOpt.MaxAbsDiff(ours, topLogits);
        output.WriteLine($"float32: top-8 logits over all 10 steps max |diff| = {maxDiff:E3} (mask derived from pad id)");
        Assert.True(maxDiff < 1e-3, $"top-8 logits max |diff| {maxDiff}");
    }

    [Fact]
    public void Bfloat16_generation_should_agree_with_hugging_face_up_to_near_ties()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var mask = OptTiny.Read("prompt_mask.npy");
        var expected = OptTiny.Read("hf_fp32_tokens.npy").data<long>().ToArray();
        var gaps = OptTiny.Read("hf_fp32_top2_gap.npy").to(ScalarType.Float64).data<double>().ToArray();
        var expectedLogits = OptTiny.Read("hf_fp32_prefill_logits.npy");

        using var result = ReferenceGenerator.Generate(model.Weights, ids, mask,
            new GenerationSettings(GenLen), new ReferenceRun(ComputeSettings.BFloat16) { KeepLogits = true });
        var tokens = result.OutputIds.data<long>().ToArray();
        int equal = tokens.Zip(expected).Count(p => p.First == p.Second);
        double maxDiff = SmallOpt.MaxAbsDiff(result.StepLogits[0], expectedLogits);

        // Per sequence, tokens must agree up to the first step whose Hugging Face top-2 gap is under the tolerance
        // bfloat16 can flip; from a flip on, the sequence legitimately differs.
        const double tieTolerance = 0.1;
        int compared = 0;
        for (var row = 0; row < 8; row++)
        {
            for (var step = 0; step < GenLen; step++)
            {
                int at = row * GenLen + step;
                if (gaps[at] < tieTolerance)
                {
                    break; // a near-tie: bfloat16 may pick the other token, and the rest of the sequence follows it
                }

                Assert.True(expected[at] == tokens[at], $"bfloat16 token differs at sequence {row} step {step} (gap {gaps[at]:F3})");
                compared++;
            }
        }

        output.WriteLine($"bfloat16: {equal}/80 tokens equal to HF fp32; {compared} checked up to near-ties (< {tieTolerance}); prefill logits max |diff| = {maxDiff:E3}");
        // bfloat16 keeps 8 significant bits: logits near 11 are themselves spaced 0.0625 apart, and every layer
        // rounds its output the same way. Allow 2% of the largest logit (measured: just under 1%).
        double scale = expectedLogits.abs().max().item<float>();
        output.WriteLine($"bfloat16: largest |logit| {scale:F2}, max |diff| / that = {maxDiff / scale:E2}");
        Assert.True(maxDiff < 0.02 * scale, $"bfloat16 prefill logits max |diff| {maxDiff} against largest |logit| {scale}");
    }

    [Fact]
    public void Float32_compute_over_a_float16_cache_should_still_give_the_hugging_face_tokens()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var mask = OptTiny.Read("prompt_mask.npy");
        var expected = OptTiny.Read("hf_fp32_tokens.npy");
        var topIds = OptTiny.Read("hf_fp32_top8_ids.npy");
        var topLogits = OptTiny.Read("hf_fp32_top8_logits.npy");
        using var result = ReferenceGenerator.Generate(model.Weights, ids, mask,
            new GenerationSettings(GenLen), new ReferenceRun(ComputeSettings.Float32) { CacheDtype = ScalarType.Float16, KeepLogits = true });
        var ours = torch.stack(result.StepLogits, 1).gather(2, topIds.to(ScalarType.Int64));
        double maxDiff = SmallOpt.MaxAbsDiff(ours, topLogits);
        int equal = result.OutputIds.data<long>().ToArray().Zip(expected.data<long>().ToArray()).Count(p => p.First == p.Second);
        output.WriteLine($"float32 compute, float16 cache: {equal}/80 tokens equal; top-8 logits max |diff| = {maxDiff:E3}");
        Assert.Equal(80, equal);
        Assert.True(maxDiff < 1e-2, $"top-8 logits max |diff| {maxDiff}");
    }

    [Fact]
    public void Sampling_should_repeat_with_a_seed_and_differ_across_seeds()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        long[] Run(ulong seed, double temperature = 1.0)
        {
            using var r = ReferenceGenerator.Generate(model.Weights, ids, null, new GenerationSettings(GenLen)
            {
                Sampling = new SamplingOptions(doSample: true, temperature: temperature, seed: seed),
            }, new ReferenceRun(ComputeSettings.Float32));
            return r.OutputIds.data<long>().ToArray();
        }

        var first = Run(1);
        Assert.Equal(first, Run(1));
        Assert.NotEqual(first, Run(2));

        // A random model's logits are flat: at temperature 1 draws are spread; near zero they are the greedy tokens.
        var greedy = OptTiny.Read("hf_fp32_tokens.npy").data<long>().ToArray();
        Assert.True(first.Zip(greedy).Count(p => p.First == p.Second) < 40);
        Assert.Equal(greedy, Run(3, temperature: 1e-6));
    }

    [Fact]
    public void Temperature_should_sharpen_or_flatten_the_draws()
    {
        using var scope = NewDisposeScope();
        // 4000 rows of the same logits over 3 tokens; probabilities at T = 1: 0.09, 0.24, 0.67.
        var logits = torch.tensor(new float[] { 0, 1, 2 }).expand(4000, 3);
        double Share(double temperature, int token)
        {
            using var generator = new Generator(5, CPU);
            using var drawn = TokenChoice.Select(logits, new SamplingOptions(true, temperature), generator);
            using var hits = drawn.eq(token).to(ScalarType.Float64).mean();
            return hits.item<double>();
        }

        Assert.InRange(Share(1.0, 2), 0.63, 0.71);
        Assert.InRange(Share(1.0, 0), 0.07, 0.11);
        Assert.InRange(Share(100.0, 0), 0.30, 0.36); // hot: nearly uniform
        Assert.Equal(1.0, Share(0.05, 2)); // cold: the argmax
        using var greedy = OptOutputGreedy(logits);
        Assert.Equal(2, greedy.item<long>());
    }

    [Fact]
    public void Stop_token_should_be_emitted_once_then_pads()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var plain = OptTiny.Read("hf_fp32_tokens.npy"); // (8, 10)
        long stop = plain[0, 2].item<long>(); // sequence 0 emits this at step 2
        var plainRows = plain.data<long>().ToArray();

        using var result = ReferenceGenerator.Generate(model.Weights, ids, null,
            new GenerationSettings(GenLen) { StopTokenId = checked((int)stop) }, new ReferenceRun(ComputeSettings.Float32));
        var rows = result.OutputIds.data<long>().ToArray();
        for (var row = 0; row < 8; row++)
        {
            var expected = plainRows.Skip(row * GenLen).Take(GenLen).ToArray();
            int first = Array.IndexOf(expected, stop);
            if (first >= 0)
            {
                for (var k = first + 1; k < GenLen; k++)
                {
                    expected[k] = 1; // pad id, and fed back as such: later tokens would differ anyway
                }
            }

            var actual = rows.Skip(row * GenLen).Take(GenLen).ToArray();
            Assert.Equal(expected.Take(first >= 0 ? first + 1 : GenLen), actual.Take(first >= 0 ? first + 1 : GenLen));
            if (first >= 0)
            {
                Assert.All(actual.Skip(first + 1), t => Assert.Equal(1, t));
            }
        }

        Assert.Equal(stop, rows[2]);
        Assert.All(rows.Skip(3).Take(7), t => Assert.Equal(1, t));
    }

    [Fact]
    public void Stop_rule_should_pad_after_the_stop_and_keep_flags()
    {
        using var scope = NewDisposeScope();
        var ids = torch.tensor(new long[] { 5, 2, 2, 7 }, [4, 1]);
        var stopped = torch.tensor(new[] { false, false, true, true }, [4, 1]);
        var (emitted, nowStopped) = StopTokens.Apply(ids, stopped, stopTokenId: 2, padTokenId: 1);
        Assert.Equal(new long[] { 5, 2, 1, 1 }, emitted.data<long>().ToArray());
        Assert.Equal(new[] { false, true, true, true }, nowStopped.data<bool>().ToArray());
        Assert.Equal(new[] { false, false, true, true }, stopped.data<bool>().ToArray()); // inputs unchanged
    }

    [Fact]
    public void Sparse_generation_with_sparsity_one_should_equal_dense_generation()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        var generation = new GenerationSettings(4);
        var run = new ReferenceRun(ComputeSettings.Float32) { KeepLogits = true };
        using var dense = ReferenceGenerator.Generate(model.Weights, ids, null, generation, run);
        using var sparse = ReferenceGenerator.Generate(model.Weights, ids, null, generation, run with { AttnSparsity = 0.5 });
        Assert.Equal(0, SmallOpt.MaxAbsDiff(dense.StepLogits[0], sparse.StepLogits[0])); // prefill is dense
        Assert.True(SmallOpt.MaxAbsDiff(dense.StepLogits[3], sparse.StepLogits[3]) > 1e-4);
    }

    [Fact]
    public void A_whole_generation_should_leave_no_tensor_behind()
    {
        using var ids = OptTiny.Read("prompt_ids.npy");
        using var mask = OptTiny.Read("prompt_mask.npy");
        long leaked = LiveTensors.LeakedBy(() =>
        {
            using var result = ReferenceGenerator.Generate(model.Weights, ids, mask,
                new GenerationSettings(GenLen) { Sampling = new SamplingOptions(true, 0.7, 9), StopTokenId = 2 },
                new ReferenceRun(ComputeSettings.BFloat16) { KeepLogits = true, AttnSparsity = 0.5 });
        });
        Assert.Equal(0, leaked);
    }

    [Fact]
    public void Generation_should_refuse_float16_on_the_cpu_and_too_long_requests()
    {
        using var scope = NewDisposeScope();
        var ids = OptTiny.Read("prompt_ids.npy");
        Assert.Throws<UnsupportedComputeException>(() =>
            ReferenceGenerator.Generate(model.Weights, ids, null, new GenerationSettings(2), new ReferenceRun(ComputeSettings.Float16)));
        var e = Assert.Throws<ArgumentException>(() =>
            ReferenceGenerator.Generate(model.Weights, ids, null, new GenerationSettings(2040), new ReferenceRun(ComputeSettings.Float32)));
        Assert.Contains("max_seq_len 2048", e.Message);
    }

    private static Tensor OptOutputGreedy(Tensor logits) => TokenChoice.Select(logits.narrow(0, 0, 1), SamplingOptions.Greedy);
}
