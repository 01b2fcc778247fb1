namespace FlexGen.Host.Hosting;

using System.Globalization;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

/// <summary>The policy <c>--policy auto</c> chose, the cost model's prediction for it and what it was planned with.</summary>
/// <param name="HardwareSource">The hardware profile's file (given, or this machine's cached one).</param>
/// <param name="Considered">Blocks the search ranked (both CPU attention settings).</param>
public sealed record AutoPlan(Policy Policy, PlanEvaluation Prediction, string HardwareSource, PlanBudgets Budgets, int Considered, TimeSpan Elapsed)
{
    /// <summary>"policy: ... predicted ..." lines for a front end.</summary>
    public string Describe()
    {
        var p = Prediction;
        return string.Create(CultureInfo.InvariantCulture,
            $"auto policy: --gpu-batch-size {Policy.GpuBatchSize} --num-gpu-batches {Policy.NumGpuBatches} --percent {string.Join(' ', Policy.Percent)} " +
            $"--cpu-cache-compute {(Policy.CpuCacheCompute ? "true" : "false")} ({Considered} blocks ranked in {Elapsed.TotalSeconds:F2} s; hardware {HardwareSource})\n" +
            $"auto predicted: prefill {p.PrefillThroughput:F1} token/s, decode {p.DecodeThroughput:F1} token/s, total {p.Throughput:F1} token/s " +
            $"(prefill bound by {p.Prefill!.BoundBy}, decode by {p.Decode!.BoundBy})");
    }
}

/// <summary>No policy of the model fits the budgets; the message names the budgets and the smallest run's need.</summary>
public sealed class NoPolicyFitsException(string model, TierBudgets budgets, MemoryNeed smallestNeed)
    : InvalidOperationException(
        $"no policy of {model} fits the budgets ({budgets}): the smallest run (a block of 1 x 1, weights and cache on disk, " +
        $"activations on the CPU) needs gpu {TierBudgets.Gib(smallestNeed.Gpu.Total)}, cpu {TierBudgets.Gib(smallestNeed.Cpu.Total)}, " +
        $"disk {TierBudgets.Gib(smallestNeed.Disk.Total)}.")
{
    public TierBudgets Budgets { get; } = budgets;

    public MemoryNeed SmallestNeed { get; } = smallestNeed;
}

/// <summary>
/// <c>--policy auto</c>: the cost model's search (<see cref="PolicySearch.Ranked"/>) under the engine's terms of the
/// user's other settings (overlap, compression), with and without CPU attention (and, computing on the CPU, with the
/// GPU batches grouped: <see cref="EngineTerms.GroupedBatches"/>), over the budgets the engine holds the
/// run to; each ranked block snapped to what the engine runs (whole percents, activations on one tier, a compressed
/// cache on one tier, CPU attention only where some cache is off the GPU) and checked by the engine's own placement
/// (<see cref="PlacementPlan.Create"/> against the budgets). Of the blocks that pass, the smallest within
/// <see cref="Tolerance"/> of the best predicted throughput: beyond that a larger block buys nothing the model can see.
/// </summary>
public static class AutoPolicy
{
    /// <summary>Relative throughput within which a smaller block is preferred.</summary>
    public const double Tolerance = 0.01;

    /// <summary>
    /// The largest block considered when the run sets no limit: FlexGen's own benchmark blocks hold up to a few thousand
    /// sequences; beyond, a block only grows the prompts and outputs held in memory (and a tiny model "fits" millions).
    /// </summary>
    public const int DefaultMaxBlockSize = 4096;

    /// <summary>Blocks checked against the engine before choosing (the search ranks them best first).</summary>
    private const int Checked = 64;

    /// <summary>A budget the machine does not limit: larger than any model's need.</summary>
    private const long Unlimited = 1L << 50;

    /// <param name="template">The user's settings: the block and percentages are chosen, everything else is kept.</param>
    /// <param name="maxBlockSize">The most sequences a block may hold (e.g. generate's prompt count); null: <see cref="DefaultMaxBlockSize"/>.</param>
    /// <param name="prefetchSteps">The pipeline's prefetch steps: a candidate is checked with the buffers they keep in flight.</param>
    /// <exception cref="NoPolicyFitsException">nothing fits the budgets.</exception>
    public static AutoPlan Choose(ModelConfig config, Policy template, int promptLen, int genLen, TierBudgets budgets,
        HardwareProfile hardware, string hardwareSource, int computeDtypeBytes, int? maxBlockSize = null, int prefetchSteps = 1)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(budgets);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long cpu = budgets.Cpu?.Bytes ?? Unlimited;
        // An emulated GPU tier has no budget of its own: it shares the CPU's.
        var planBudgets = new PlanBudgets(budgets.Gpu?.Bytes ?? (budgets.GpuInCpuMemory ? cpu : Unlimited), cpu, budgets.Disk?.Bytes ?? Unlimited)
        {
            GpuInCpuMemory = budgets.GpuInCpuMemory,
        };
        // Per-batch compute with and without CPU attention; on an emulated GPU also grouped compute (the whole cache on
        // the GPU tier, PlacementPlan.ComputesBatchesTogether), which the search ranks as its own problem.
        var problems = new[] { false, true }
            .Select(cpuAttention => Searched(PolicyCost.ProblemOf(config, template with { CpuCacheCompute = cpuAttention }, promptLen, genLen, planBudgets, hardware,
                computeDtypeBytes, prefetchSteps), grouped: false))
            .ToList();
        if (budgets.GpuInCpuMemory) problems.Add(Searched(problems[0], grouped: true));
        var ranked = problems
            .SelectMany(problem => PolicySearch.Ranked(problem, maxBlockSize: maxBlockSize ?? DefaultMaxBlockSize).Feasible.Select(e => (problem, e)))
            .OrderByDescending(c => c.e.Throughput)
            .ToList();

        var passing = new List<(Policy Policy, PlanEvaluation Prediction)>();
        foreach (var (problem, candidate) in ranked)
        {
            if (passing.Count == Checked) break;
            var policy = Snap(template with { CpuCacheCompute = problem.Engine!.CpuCacheCompute }, candidate);
            if (passing.Any(p => p.Policy == policy)) continue;
            // The snapped policy's own problem: grouped or not as the engine will run it.
            var snapped = CostModel.Evaluate(PolicyCost.ProblemOf(config, policy, promptLen, genLen, planBudgets, hardware, computeDtypeBytes, prefetchSteps),
                PolicyCost.BlockOf(policy), PolicyCost.PlacementOf(policy));
            if (!snapped.Feasible || !EngineRuns(config, policy, promptLen, genLen, budgets, computeDtypeBytes, prefetchSteps)) continue;
            passing.Add((policy, snapped));
        }
        if (passing.Count == 0)
            throw new NoPolicyFitsException(config.Name, budgets, SmallestNeed(config, template, promptLen, genLen, computeDtypeBytes));

        double best = passing.Max(p => p.Prediction.Throughput);
        var chosen = passing.Where(p => p.Prediction.Throughput >= best * (1 - Tolerance))
            .OrderBy(p => p.Policy.GpuBatchSize * (long)p.Policy.NumGpuBatches)
            .ThenByDescending(p => p.Prediction.Throughput)
            .First();
        return new AutoPlan(chosen.Policy, chosen.Prediction, hardwareSource, planBudgets, ranked.Count, clock.Elapsed);
    }

    /// <summary>The planner's placement as the engine takes it (see the class summary).</summary>
    public static Policy Snap(Policy template, PlanEvaluation candidate)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(candidate);
        var p = candidate.Placement!.Percent;
        double wg = Math.Round(p[0]), wc = Math.Min(Math.Round(p[1]), 100 - wg);
        double cg = Math.Round(p[2]), cc = Math.Min(Math.Round(p[3]), 100 - cg);
        if (template.CompressCache)
        {
            // A compressed cache lives on one tier: the one the plan gave the most.
            double cd = 100 - cg - cc;
            (cg, cc) = cg >= cc && cg >= cd ? (100, 0) : cc >= cd ? (0, 100) : (0, 0);
        }
        (double hg, double hc) = p[4] >= p[5] ? (100.0, 0.0) : (0.0, 100.0);
        // Only the placement and the block change: every other setting stays the template's.
        return template.WithWeightPercent(wg, wc).WithCachePercent(cg, cc).WithActPercent(hg, hc) with
        {
            GpuBatchSize = candidate.Block.GpuBatchSize,
            NumGpuBatches = candidate.Block.NumGpuBatches,
            // CPU attention means something only where some cache is off the GPU.
            CpuCacheCompute = template.CpuCacheCompute && cg < 100,
        };
    }

    private static PlanProblem Searched(PlanProblem problem, bool grouped) =>
        problem with { Engine = problem.Engine! with { GroupedBatches = grouped } };

    private static bool EngineRuns(ModelConfig config, Policy policy, int promptLen, int genLen, TierBudgets budgets, int computeDtypeBytes,
        int prefetchSteps)
    {
        try
        {
            PlacementPlan.Create(config, policy, promptLen, genLen, budgets: budgets, computeDtypeBytes: computeDtypeBytes,
                computesOnCpu: budgets.GpuInCpuMemory, prefetchSteps: prefetchSteps);
            return true;
        }
        catch (PlacementException)
        {
            return false;
        }
    }

    private static MemoryNeed SmallestNeed(ModelConfig config, Policy template, int promptLen, int genLen, int computeDtypeBytes) =>
        PlacementPlan.Create(config, Snap(template with { CpuCacheCompute = false }, new PlanEvaluation
        {
            Block = new PlanBlock(1, 1),
            Feasible = true,
            Placement = PlanPlacement.FromPercent([0, 0, 0, 0, 0, 100]),
        }), promptLen, genLen, computeDtypeBytes: computeDtypeBytes).Need;
}
