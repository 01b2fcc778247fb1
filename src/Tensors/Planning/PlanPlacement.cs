namespace FlexGen.Tensors.Planning;

/// <summary>The nine placement fractions of the cost model: weights, cache and hidden states on GPU, CPU and disk.</summary>
public enum PlacementFraction
{
    WeightsGpu, WeightsCpu, WeightsDisk,
    CacheGpu, CacheCpu, CacheDisk,
    HiddenGpu, HiddenCpu, HiddenDisk,
}

/// <summary>
/// Where a policy puts weights, cache and hidden states, as fractions in [0, 1] (FlexLLMGen's wg, wc, cg, cc, hg, hc);
/// the disk gets the rest of each.
/// </summary>
public sealed record PlanPlacement(double WeightsGpu, double WeightsCpu, double CacheGpu, double CacheCpu, double HiddenGpu, double HiddenCpu)
{
    /// <summary>From six percentages in the policy's order (wg, wc, cg, cc, hg, hc).</summary>
    public static PlanPlacement FromPercent(IReadOnlyList<double> percent)
    {
        ArgumentNullException.ThrowIfNull(percent);
        if (percent.Count != 6) throw new ArgumentException($"six percentages expected, got {percent.Count}", nameof(percent));
        return new(percent[0] / 100, percent[1] / 100, percent[2] / 100, percent[3] / 100, percent[4] / 100, percent[5] / 100);
    }

    /// <summary>The six percentages (wg, wc, cg, cc, hg, hc).</summary>
    public double[] Percent => [WeightsGpu * 100, WeightsCpu * 100, CacheGpu * 100, CacheCpu * 100, HiddenGpu * 100, HiddenCpu * 100];

    /// <summary>The value of one of the nine fractions.</summary>
    public double this[PlacementFraction fraction] => fraction switch
    {
        PlacementFraction.WeightsGpu => WeightsGpu,
        PlacementFraction.WeightsCpu => WeightsCpu,
        PlacementFraction.WeightsDisk => 1 - WeightsGpu - WeightsCpu,
        PlacementFraction.CacheGpu => CacheGpu,
        PlacementFraction.CacheCpu => CacheCpu,
        PlacementFraction.CacheDisk => 1 - CacheGpu - CacheCpu,
        PlacementFraction.HiddenGpu => HiddenGpu,
        PlacementFraction.HiddenCpu => HiddenCpu,
        PlacementFraction.HiddenDisk => 1 - HiddenGpu - HiddenCpu,
        _ => throw new ArgumentOutOfRangeException(nameof(fraction), fraction, null),
    };
}

/// <summary>
/// A linear function of the placement fractions, <c>constant + sum(coefficient * fraction)</c>: every time and memory
/// term of the cost model is one, so the same term is a row of the linear program and a number for a given placement.
/// </summary>
public sealed class LinearTerm
{
    private static readonly int FractionCount = Enum.GetValues<PlacementFraction>().Length;

    private readonly double[] _coefficients;

    private LinearTerm(double constant, double[] coefficients)
    {
        Constant = constant;
        _coefficients = coefficients;
    }

    public double Constant { get; }

    public static LinearTerm Zero { get; } = Of(0);

    /// <summary>A constant.</summary>
    public static LinearTerm Of(double constant) => new(constant, new double[FractionCount]);

    /// <summary><paramref name="coefficient"/> times the sum of <paramref name="fractions"/>.</summary>
    public static LinearTerm Of(double coefficient, params PlacementFraction[] fractions)
    {
        var coefficients = new double[FractionCount];
        foreach (var fraction in fractions) coefficients[(int)fraction] += coefficient;
        return new(0, coefficients);
    }

    public double Coefficient(PlacementFraction fraction) => _coefficients[(int)fraction];

    /// <summary>The term's value under a placement.</summary>
    public double Evaluate(PlanPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        double value = Constant;
        foreach (var fraction in Enum.GetValues<PlacementFraction>()) value += _coefficients[(int)fraction] * placement[fraction];
        return value;
    }

    public static LinearTerm operator +(LinearTerm a, LinearTerm b) =>
        new(a.Constant + b.Constant, [.. a._coefficients.Zip(b._coefficients, (x, y) => x + y)]);

    public static LinearTerm operator +(LinearTerm a, double constant) => new(a.Constant + constant, a._coefficients);

    public static LinearTerm operator *(double scale, LinearTerm a) => new(scale * a.Constant, [.. a._coefficients.Select(c => scale * c)]);
}
