namespace FlexGen.Tensors.Tests.Planning;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;
using static FlexGen.Tensors.Tests.Planning.PlanningTestSupport;

/// <summary>The cost model's terms, one at a time, against FlexLLMGen's formulas and its own numbers.</summary>
public class CostTermsTests
{
    private static readonly PlanPlacement AllGpu = PlanPlacement.FromPercent([100, 0, 100, 0, 100, 0]);
    private static readonly PlanPlacement AllCpu = PlanPlacement.FromPercent([0, 100, 0, 100, 0, 100]);
    private static readonly PlanPlacement AllDisk = PlanPlacement.FromPercent([0, 0, 0, 0, 0, 100]);

    [Fact]
    public void Model_shape_should_come_through_the_family_seam()
    {
        var shape = ModelShape.Of(ModelFamilies.FromPreset("opt-30b"));

        // FlexLLMGen's four numbers, and OPT's geometry its formulas assume: every head a KV head, 4 h1^2 + 2 h1 h2 block matrices.
        Assert.Equal(new ModelShape(48, 7168, 28672, 56) { HeadWeightElements = 50272L * 7168 }, shape);
    }

    [Fact]
    public void Layer_weight_bytes_should_be_8h1_squared_plus_4h1h2()
    {
        var terms = new CostTerms(OnT4("opt-6.7b", 256, 32), new PlanBlock(4, 1));

        Assert.Equal(8.0 * 4096 * 4096 + 4.0 * 4096 * 16384, terms.LayerWeightBytes);
    }

    [Fact]
    public void All_on_the_gpu_should_move_nothing_and_be_bound_by_compute()
    {
        var terms = new CostTerms(OnT4("opt-6.7b", 256, 32), new PlanBlock(4, 1));

        foreach (var link in new[] { terms.CtogPrefill, terms.GtocPrefill, terms.DtocPrefill, terms.CtodPrefill, terms.CtogDecode, terms.GtocDecode, terms.DtocDecode, terms.CtodDecode })
            Assert.Equal(0, link.Evaluate(AllGpu));
        // bls (8 s h1^2 + 4 s h1 h2) / mm_flops_p + 4 bls s^2 h1 / bmm_flops_p
        double s = 256, h1 = 4096, h2 = 16384, bls = 4;
        Near(bls * (8 * s * h1 * h1 + 4 * s * h1 * h2) / T4.MmFlopsP + 4 * bls * s * s * h1 / T4.BmmFlopsP, terms.ComputePrefill.Evaluate(AllGpu));
        Assert.Equal("gpu compute", terms.PrefillBounds.MaxBy(b => b.Seconds.Evaluate(AllGpu))!.Name);
        Assert.Equal("cpu->gpu + compute", terms.DecodeBounds.MaxBy(b => b.Seconds.Evaluate(AllGpu))!.Name);
    }

    [Fact]
    public void Weights_on_the_cpu_should_cost_a_layer_over_the_cpu_to_gpu_link_per_step()
    {
        var problem = OnT4("opt-30b", 512, 32);
        var terms = new CostTerms(problem, new PlanBlock(64, 1));
        double wi = terms.LayerWeightBytes, s = 512, h1 = 7168, bls = 64;

        Near((wi + 2 * s * h1 * bls) / T4.CtogBdw, terms.CtogPrefill.Evaluate(AllCpu));
        Near((wi + 2 * h1 * bls) / T4.CtogBdw, terms.CtogDecode.Evaluate(AllCpu));
        Near(4 * (s + 1) * h1 * bls / T4.GtocBdwCache + 2 * s * h1 * bls / T4.GtocBdwHidden, terms.GtocPrefill.Evaluate(AllCpu));
    }

    [Fact]
    public void Disk_reads_in_decode_should_run_at_95_percent_of_the_disk_bandwidth_for_weights()
    {
        var terms = new CostTerms(OnT4("opt-6.7b", 256, 32), new PlanBlock(2, 3));
        double wi = terms.LayerWeightBytes, s = 256, n = 32, h1 = 4096, bls = 6;

        Near(wi / T4.DtocBdw, terms.DtocPrefill.Evaluate(PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0])));
        Near(wi / (T4.DtocBdw * 0.95) + 4 * bls * (s + n / 2) * h1 / T4.DtocBdw,
            terms.DtocDecode.Evaluate(PlanPlacement.FromPercent([0, 0, 0, 0, 100, 0])));
        Near(terms.LayerWeightBytes * 32, terms.Disk.Bytes.Evaluate(PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0])));
        Assert.Equal(0, terms.Disk.Bytes.Evaluate(AllGpu));
        Assert.True(terms.Disk.Bytes.Evaluate(AllDisk) > 0);
    }

    [Theory]
    [InlineData(64, 4096, 1.0)]
    [InlineData(128, 8192, 1.0)] // both logs clamp at 0
    [InlineData(1, 1024, 1 + 0.0168 * 12 - 0.0328 * 6 - 0.0621 * 2)] // log2(64) = 6, log2(4) = 2
    public void Cpu_attention_rate_should_follow_FlexLLMGens_correction(int gpuBatchSize, int hidden, double factor)
    {
        Near(T4.CpuFlops * factor, CostTerms.EffectiveCpuFlops(T4, gpuBatchSize, hidden));
    }

    [Fact]
    public void Cpu_attention_rate_should_not_fall_below_a_tenth()
    {
        Near(T4.CpuFlops * 0.1, CostTerms.EffectiveCpuFlops(T4 with { C2 = 1 }, 1, 4096)); // 1 - 6 clamps to 0.1
    }

    /// <summary>FlexLLMGen's own evaluation of opt-30b, a GPU batch of 64, everything on the CPU (the fixture's t4-30b-512 case).</summary>
    [Fact]
    public void A_fixed_placement_should_reproduce_FlexLLMGens_times_and_gpu_peaks()
    {
        var terms = new CostTerms(OnT4("opt-30b", 512, 32), new PlanBlock(64, 1));

        double prefill = terms.PrefillBounds.Max(b => b.Seconds.Evaluate(AllCpu)) * terms.PrefillSteps;
        double decode = terms.DecodeBounds.Max(b => b.Seconds.Evaluate(AllCpu)) * terms.DecodeSteps;

        Near(93.631296, prefill, 1e-6);
        Near(277.19370191999997, decode, 1e-6);
        // FlexLLMGen's solver prints its variables to 8 significant digits.
        Near(10921968000.0, terms.GpuPrefill.Bytes.Evaluate(AllCpu), 1e-7);
        Near(2477260800.0, terms.GpuDecode.Bytes.Evaluate(AllCpu), 1e-7);
    }

    [Fact]
    public void Memory_limits_should_scale_the_budgets_by_alpha()
    {
        var terms = new CostTerms(OnT4("opt-6.7b", 256, 32, alpha: 1.2), new PlanBlock(4, 1));

        var limits = terms.MemoryLimits().ToDictionary(l => l.Name, l => l.BudgetBytes);

        Assert.Equal(15 * 1.2 * (1L << 30), limits["gpu prefill"]);
        Assert.Equal(200 * 1.2 * (1L << 30), limits["cpu decode"]);
        Assert.Equal(1500 * 1.2 * (1L << 30), limits["disk"]);
    }
}
