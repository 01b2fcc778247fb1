namespace FlexGen.Tensors.Tests.Planning;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;

/// <summary>The inputs of tests/Fixtures/cost-model: FlexLLMGen's T4 constants and its three cases' budgets.</summary>
public static class PlanningTestSupport
{
    private const double Gb = 1L << 30;

    /// <summary>FlexLLMGen's CostModelConfig defaults (a Google Cloud T4), as the fixture lists them.</summary>
    public static HardwareProfile T4 { get; } = new()
    {
        CtogBdw = 12.89 * Gb,
        GtocBdwCache = 0.97 * Gb,
        GtocBdwHidden = 4.82 * Gb,
        DtocBdw = 0.473 * Gb,
        CtodBdwCacheP = 0.746 * Gb,
        CtodBdwHiddenP = 2.015 * Gb,
        CtodBdwG = 2.015 * Gb,
        MmFlopsP = 21.24e12,
        MmFlopsG = 4.3e12,
        BmmFlopsP = 9.97e12,
        BmmFlopsG = 0.079e12,
        CpuFlops = 0.0123e12,
        C1 = 0.0168,
        C2 = 0.0328,
        C3 = 0.0621,
    };

    /// <summary>A preset on the fixture's T4 with 15 / 200 / 1500 GB budgets (the first two fixture cases' machine).</summary>
    public static PlanProblem OnT4(string preset, int promptLen, int genLen, double alpha = PlanProblem.DefaultAlpha, double gpuGb = 15, double cpuGb = 200, double diskGb = 1500) =>
        new(ModelShape.Of(ModelFamilies.FromPreset(preset)), promptLen, genLen,
            new PlanBudgets((long)(gpuGb * Gb), (long)(cpuGb * Gb), (long)(diskGb * Gb)), T4, alpha);

    /// <summary>Within <paramref name="relative"/> of <paramref name="expected"/>.</summary>
    public static void Near(double expected, double actual, double relative = 1e-9) =>
        Assert.True(Math.Abs(actual - expected) <= relative * Math.Abs(expected), $"expected {expected:R}, got {actual:R} ({(actual - expected) / expected:P4} off)");
}
