using Google.OrTools.LinearSolver;

namespace FlexGen.Tensors.Planning;

/// <summary>A phase's predicted time and what bounds it.</summary>
/// <param name="SecondsPerStep">Seconds per layer (prefill) or per layer and token (decode).</param>
/// <param name="TotalSeconds">The phase over the whole generation (prefill: l steps; decode: (n - 1) l steps).</param>
/// <param name="BoundBy">The <see cref="PhaseBound.Name"/> that sets it.</param>
public sealed record PhaseTime(double SecondsPerStep, double TotalSeconds, string BoundBy);

/// <summary>A tier's predicted peak bytes and the budget (alpha applied) it is held to.</summary>
public sealed record TierUse(double PrefillPeakBytes, double DecodePeakBytes, double BudgetBytes)
{
    public double PeakBytes => Math.Max(PrefillPeakBytes, DecodePeakBytes);
}

/// <summary>
/// The cost model's answer for a block: infeasible (no placement fits the alpha-scaled budgets), or the placement with
/// its predicted times, throughput and memory.
/// </summary>
public sealed record PlanEvaluation
{
    public required PlanBlock Block { get; init; }

    public required bool Feasible { get; init; }

    /// <summary>The placement (the fixed one, or the solver's optimum); null when infeasible.</summary>
    public PlanPlacement? Placement { get; init; }

    public PhaseTime? Prefill { get; init; }

    public PhaseTime? Decode { get; init; }

    public TierUse? Gpu { get; init; }

    public TierUse? Cpu { get; init; }

    public TierUse? Disk { get; init; }

    /// <summary>Generated tokens per second: bls * n / (prefill + decode); 0 when infeasible (as FlexLLMGen's search counts it).</summary>
    public double Throughput { get; init; }

    /// <summary>Prompt tokens per second of the prefill, bls * s / prefill (bench's prefill throughput); 0 when infeasible.</summary>
    public double PrefillThroughput { get; init; }

    /// <summary>Generated tokens per second of the decode, bls * (n - 1) / decode (bench's decode throughput); 0 when infeasible.</summary>
    public double DecodeThroughput { get; init; }

    public double TotalSeconds => (Prefill?.TotalSeconds ?? 0) + (Decode?.TotalSeconds ?? 0);
}

/// <summary>
/// FlexLLMGen's <c>solve_lp</c>: for a block, the placement that minimises the generation's time per sequence subject
/// to the memory limits, as a linear program solved with GLOP. With a fixed placement (FlexLLMGen's debug mode) it
/// evaluates that placement; infeasible when it breaks a limit.
/// </summary>
public static class CostModel
{
    /// <summary>Memory rows are posed in GB so that their coefficients sit near the time rows' in magnitude.</summary>
    private const double BytesPerRowUnit = 1L << 30;

    public static PlanEvaluation Evaluate(PlanProblem problem, PlanBlock block, PlanPlacement? fixedPlacement = null)
    {
        var terms = new CostTerms(problem, block);
        using var solver = Solver.CreateSolver("GLOP")
            ?? throw new InvalidOperationException("OR-Tools has no GLOP solver in this build.");

        var fractions = Enum.GetValues<PlacementFraction>()
            .Select(f => solver.MakeNumVar(0, double.PositiveInfinity, f.ToString()))
            .ToArray();
        Variable Fraction(PlacementFraction f) => fractions[(int)f];
        var tpre = solver.MakeNumVar(0, double.PositiveInfinity, "Tpre");
        var tgen = solver.MakeNumVar(0, double.PositiveInfinity, "Tgen");

        // Each of weights, cache and hidden is placed whole; hidden states never go to disk (FlexLLMGen's
        // "temporary hack": its runtime does not support it).
        SumIsOne(solver, Fraction(PlacementFraction.WeightsGpu), Fraction(PlacementFraction.WeightsCpu), Fraction(PlacementFraction.WeightsDisk));
        SumIsOne(solver, Fraction(PlacementFraction.CacheGpu), Fraction(PlacementFraction.CacheCpu), Fraction(PlacementFraction.CacheDisk));
        SumIsOne(solver, Fraction(PlacementFraction.HiddenGpu), Fraction(PlacementFraction.HiddenCpu), Fraction(PlacementFraction.HiddenDisk));
        SumIsOne(solver, Fraction(PlacementFraction.HiddenGpu), Fraction(PlacementFraction.HiddenCpu));

        if (problem.Engine is { GroupedBatches: true })
        {
            // Grouped compute runs only with the whole cache on the GPU tier (PlacementPlan.ComputesBatchesTogether).
            var row = solver.MakeConstraint(1, 1);
            row.SetCoefficient(Fraction(PlacementFraction.CacheGpu), 1);
        }

        if (fixedPlacement is not null)
        {
            foreach (var f in new[]
                     {
                         PlacementFraction.WeightsGpu, PlacementFraction.WeightsCpu, PlacementFraction.CacheGpu,
                         PlacementFraction.CacheCpu, PlacementFraction.HiddenGpu, PlacementFraction.HiddenCpu,
                     })
            {
                var row = solver.MakeConstraint(fixedPlacement[f], fixedPlacement[f]);
                row.SetCoefficient(Fraction(f), 1);
            }
        }

        // T >= each bound, as "bound - T <= 0" rows.
        foreach (var bound in terms.PrefillBounds) AtMost(solver, fractions, bound.Seconds, 1, tpre, 0);
        foreach (var bound in terms.DecodeBounds) AtMost(solver, fractions, bound.Seconds, 1, tgen, 0);
        foreach (var (_, peak, budget) in terms.MemoryLimits())
            AtMost(solver, fractions, peak.Bytes, 1 / BytesPerRowUnit, null, budget / BytesPerRowUnit);

        // Minimise T / bls, T = l Tpre + (n - 1) l Tgen.
        var objective = solver.Objective();
        objective.SetCoefficient(tpre, terms.PrefillSteps / block.BlockSize);
        objective.SetCoefficient(tgen, terms.DecodeSteps / block.BlockSize);
        objective.SetMinimization();

        var status = solver.Solve();
        if (status == Solver.ResultStatus.INFEASIBLE) return new PlanEvaluation { Block = block, Feasible = false };
        if (status != Solver.ResultStatus.OPTIMAL)
            throw new InvalidOperationException($"GLOP returned {status} for block {block}: the cost model's program is bounded and should solve.");

        var placement = fixedPlacement ?? new PlanPlacement(
            Value(fractions, PlacementFraction.WeightsGpu), Value(fractions, PlacementFraction.WeightsCpu),
            Value(fractions, PlacementFraction.CacheGpu), Value(fractions, PlacementFraction.CacheCpu),
            Value(fractions, PlacementFraction.HiddenGpu), Value(fractions, PlacementFraction.HiddenCpu));
        return Predict(terms, placement);
    }

    /// <summary>
    /// Times, throughput and memory of a placement from the terms, its memory unchecked: for a placement the program
    /// accepted, or one the engine already admitted (bench's bounds).
    /// </summary>
    public static PlanEvaluation Predict(CostTerms terms, PlanPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(terms);
        ArgumentNullException.ThrowIfNull(placement);
        var prefill = Phase(terms.PrefillBounds, placement, terms.PrefillSteps);
        var decode = Phase(terms.DecodeBounds, placement, terms.DecodeSteps);
        var budgets = terms.Problem.Budgets;
        double alpha = terms.Problem.Alpha;
        double disk = terms.Disk.Bytes.Evaluate(placement);
        var evaluation = new PlanEvaluation
        {
            Block = terms.Block,
            Feasible = true,
            Placement = placement,
            Prefill = prefill,
            Decode = decode,
            Gpu = new TierUse(terms.GpuPrefill.Bytes.Evaluate(placement), terms.GpuDecode.Bytes.Evaluate(placement), budgets.GpuBytes * alpha),
            Cpu = new TierUse(terms.CpuPrefill.Bytes.Evaluate(placement), terms.CpuDecode.Bytes.Evaluate(placement), budgets.CpuBytes * alpha),
            Disk = new TierUse(disk, disk, budgets.DiskBytes * alpha),
        };
        double bls = terms.Block.BlockSize;
        return evaluation with
        {
            Throughput = bls * terms.Problem.GenLen / evaluation.TotalSeconds,
            PrefillThroughput = bls * terms.Problem.PromptLen / prefill.TotalSeconds,
            DecodeThroughput = decode.TotalSeconds > 0 ? bls * (terms.Problem.GenLen - 1) / decode.TotalSeconds : 0,
        };
    }

    private static PhaseTime Phase(IReadOnlyList<PhaseBound> bounds, PlanPlacement placement, double steps)
    {
        var binding = bounds.MaxBy(b => b.Seconds.Evaluate(placement))!;
        double perStep = binding.Seconds.Evaluate(placement);
        return new PhaseTime(perStep, perStep * steps, binding.Name);
    }

    private static double Value(Variable[] fractions, PlacementFraction fraction) =>
        Math.Clamp(fractions[(int)fraction].SolutionValue(), 0, 1);

    private static void SumIsOne(Solver solver, params Variable[] variables)
    {
        var row = solver.MakeConstraint(1, 1);
        foreach (var v in variables) row.SetCoefficient(v, 1);
    }

    /// <summary>The row <c>scale * term - slack &lt;= limit</c> (without <paramref name="slack"/>: <c>scale * term &lt;= limit</c>).</summary>
    private static void AtMost(Solver solver, Variable[] fractions, LinearTerm term, double scale, Variable? slack, double limit)
    {
        var row = solver.MakeConstraint(double.NegativeInfinity, limit - scale * term.Constant);
        foreach (var f in Enum.GetValues<PlacementFraction>()) row.SetCoefficient(fractions[(int)f], scale * term.Coefficient(f));
        if (slack is not null) row.SetCoefficient(slack, -1);
    }
}
