namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Layers;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

/// <summary>
/// Top-k and top-p (nucleus) sampling, checked statistically: many draws from one fixed logit vector with a fixed seed,
/// compared with the distribution computed here by hand (chi-squared at alpha = 0.001), and filtered tokens never drawn.
/// </summary>
public class SamplingTests(ITestOutputHelper output)
{
    private static readonly double[] Logits = [2.0, 1.5, 1.0, 0.5, 0.0, -1.0];

    private const int Draws = 20000;

    /// <summary>Chi-squared critical values at alpha = 0.001 by degrees of freedom (1..5).</summary>
    private static readonly double[] Critical = [double.NaN, 10.828, 13.816, 16.266, 18.467, 20.515];

    /// <summary>The distribution by hand: softmax(logits / T), the top k kept, then the nucleus of p, renormalized.</summary>
    private static double[] Expected(double temperature, int? topK, double? topP)
    {
        int n = Logits.Length;
        var order = Enumerable.Range(0, n).OrderByDescending(i => Logits[i]).ToArray();
        var keep = new bool[n];
        for (int r = 0; r < n; r++) keep[order[r]] = topK is not { } k || r < k;
        double[] Normalized()
        {
            var w = Logits.Select((l, i) => keep[i] ? Math.Exp(l / temperature) : 0).ToArray();
            double sum = w.Sum();
            return w.Select(x => x / sum).ToArray();
        }

        if (topP is { } p)
        {
            var probs = Normalized();
            double before = 0;
            foreach (int i in order)
            {
                if (before >= p) keep[i] = false;
                before += probs[i];
            }
        }
        return Normalized();
    }

    [Theory]
    [InlineData(ScalarType.Float32, false)]
    [InlineData(ScalarType.Float32, true)]
    [InlineData(ScalarType.BFloat16, false)]
    public void Greedy_choice_should_take_the_first_of_tied_maxima_as_argmax_does(ScalarType dtype, bool transposed)
    {
        // Logits of 4 values over a vocabulary of 1000: every row has hundreds of ties at its maximum. Transposed: the
        // (rows, vocab) view float32's weight-on-left logits are.
        using var scope = NewDisposeScope();
        var values = randint(0, 4, [1000, 64], generator: new Generator(11)).to(dtype);
        var logits = transposed ? values.t() : values.t().contiguous(); // (64, 1000)
        var ids = TokenChoice.Select(logits, SamplingOptions.Greedy);
        Assert.Equal(new long[] { 64, 1 }, ids.shape);
        var expected = Enumerable.Range(0, 64).Select(r =>
        {
            var row = logits[r].to(ScalarType.Float32).data<float>().ToArray();
            return (long)Array.IndexOf(row, row.Max());
        }).ToArray();
        Assert.Equal(expected, ids.view(64).data<long>().ToArray());
    }

    private static long[] Counts(SamplingOptions sampling, ulong seed)
    {
        using var scope = NewDisposeScope();
        var logits = tensor(Logits.Select(l => (float)l).ToArray()).expand(Draws, Logits.Length);
        using var generator = new Generator(seed, CPU);
        var drawn = TokenChoice.Select(logits, sampling, generator);
        Assert.Equal(new long[] { Draws, 1 }, drawn.shape);
        var ids = drawn.data<long>().ToArray();
        var counts = new long[Logits.Length];
        foreach (long id in ids) counts[id]++;
        return counts;
    }

    [Theory]
    [InlineData(1.0, 3, null)]
    [InlineData(2.0, 3, null)]
    [InlineData(1.0, 5, null)]
    [InlineData(1.0, null, 0.9)]
    [InlineData(0.7, null, 0.6)]
    [InlineData(1.0, 4, 0.7)]
    [InlineData(1.0, null, null)]
    public void Draws_should_follow_the_filtered_distribution(double temperature, int? topK, double? topP)
    {
        var expected = Expected(temperature, topK, topP);
        var counts = Counts(new SamplingOptions(true, temperature, seed: null, topK, topP), 1234);

        int kept = expected.Count(e => e > 0);
        double chi2 = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (expected[i] == 0)
            {
                Assert.True(counts[i] == 0, $"token {i} is filtered out but was drawn {counts[i]} times");
                continue;
            }
            double e = expected[i] * Draws;
            chi2 += (counts[i] - e) * (counts[i] - e) / e;
        }
        output.WriteLine($"T {temperature} top-k {topK?.ToString() ?? "-"} top-p {topP?.ToString() ?? "-"}: counts [{string.Join(", ", counts)}], " +
                         $"expected [{string.Join(", ", expected.Select(e => (e * Draws).ToString("F0")))}], chi2 {chi2:F2} (df {kept - 1}, critical {Critical[kept - 1]})");
        if (kept > 1) Assert.True(chi2 < Critical[kept - 1], $"chi2 {chi2:F2} >= {Critical[kept - 1]} (df {kept - 1})");
        else Assert.Equal(Draws, counts.Max());
    }

    [Fact]
    public void The_probabilities_should_be_the_hand_computed_ones()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(Logits.Select(l => (float)l).ToArray()).unsqueeze(0);
        foreach (var (t, k, p) in new (double, int?, double?)[] { (1.0, 3, null), (1.0, null, 0.9), (0.5, 4, 0.7), (1.0, 1, null), (3.0, 6, 1.0) })
        {
            var probs = TokenChoice.Probabilities(logits, new SamplingOptions(true, t, null, k, p)).data<float>().ToArray();
            var expected = Expected(t, k, p);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], probs[i], 5);
        }
    }

    [Fact]
    public void Top_k_1_should_be_greedy()
    {
        using var scope = NewDisposeScope();
        var logits = randn(16, 50, generator: new Generator(7, CPU));
        var greedy = TokenChoice.Select(logits, SamplingOptions.Greedy).data<long>().ToArray();
        foreach (double temperature in new[] { 0.5, 1.0, 5.0 })
        {
            var sampling = new SamplingOptions(true, temperature, 99, topK: 1);
            Assert.True(sampling.IsGreedy);
            using var generator = new Generator(3, CPU);
            Assert.Equal(greedy, TokenChoice.Select(logits, sampling, generator).data<long>().ToArray());
            // The filter alone leaves only the argmax, too.
            var probs = TokenChoice.Probabilities(logits, sampling);
            Assert.Equal(greedy, probs.argmax(1).data<long>().ToArray());
            Assert.Equal(16, probs.eq(1f).sum().item<long>());
        }
    }

    [Fact]
    public void Draws_should_repeat_under_a_seed_and_differ_across_seeds()
    {
        var sampling = new SamplingOptions(true, 1.0, null, topK: 4, topP: 0.95);
        using var scope = NewDisposeScope();
        var logits = randn(64, 100, generator: new Generator(11, CPU));
        long[] Draw(ulong seed)
        {
            using var generator = new Generator(seed, CPU);
            return TokenChoice.Select(logits, sampling, generator).data<long>().ToArray();
        }

        Assert.Equal(Draw(5), Draw(5));
        Assert.NotEqual(Draw(5), Draw(6));
    }

    [Fact]
    public void A_broken_rule_should_name_the_field()
    {
        Assert.Equal("topK", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(true, 1, null, topK: 0)).ParamName);
        Assert.Equal("topK", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(true, 1, null, topK: -3)).ParamName);
        foreach (double p in new[] { 0, -0.1, 1.5, double.NaN })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(true, 1, null, topP: p));
            Assert.Equal("topP", ex.ParamName);
            Assert.Contains("topP must be in (0, 1]", ex.Message);
        }
        Assert.Equal("temperature", Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(true, double.NaN)).ParamName);
        _ = new SamplingOptions(true, 1, null, topK: 1, topP: 1); // the edges are allowed
    }

    [Fact]
    public void Settings_with_different_filters_should_differ()
    {
        Assert.NotEqual(new SamplingOptions(true, 1, 1, topK: 5), new SamplingOptions(true, 1, 1, topK: 6));
        Assert.NotEqual(new SamplingOptions(true, 1, 1, topP: 0.5), new SamplingOptions(true, 1, 1));
        Assert.Equal(new SamplingOptions(true, 1, 1, 5, 0.5), new SamplingOptions(true, 1, 1, 5, 0.5));
    }
}
