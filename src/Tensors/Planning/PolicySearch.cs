using System.Collections.Concurrent;
using System.Diagnostics;

namespace FlexGen.Tensors.Planning;

/// <summary>How the planner looks for a block.</summary>
public enum SearchKind
{
    /// <summary>Every block of the grid: the GPU batch sizes 1, 2, 3, 4, 6, 8, 12, 16, ... and every feasible number of GPU batches.</summary>
    Grid,

    /// <summary>FlexLLMGen's loop as it ships, early break included.</summary>
    FlexLlmGen,
}

/// <summary>A search's best block (null when no block fits) and what it cost.</summary>
public sealed record PlanSearchResult(PlanEvaluation? Best, int ProgramsSolved, TimeSpan Elapsed);

/// <summary>Every feasible block a search found, best first, and what it cost.</summary>
public sealed record PlanRanking(IReadOnlyList<PlanEvaluation> Feasible, int ProgramsSolved, TimeSpan Elapsed);

/// <summary>
/// The block searches over <see cref="CostModel.Evaluate"/>. Feasibility only shrinks as a block grows (every memory
/// term grows with gbs and bls), which both searches rely on to bound the number of GPU batches.
/// </summary>
public static class PolicySearch
{
    public static PlanSearchResult Run(SearchKind kind, PlanProblem problem, PlanPlacement? fixedPlacement = null) => kind switch
    {
        SearchKind.Grid => Grid(problem, fixedPlacement),
        SearchKind.FlexLlmGen => FlexLlmGen(problem, fixedPlacement),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// FlexLLMGen's <c>solve</c>: GPU batch sizes 1, 2, 3, 4, 8, 16, ... until one fits no block; for each, the most GPU
    /// batches that fit (<see cref="MaxNumGpuBatches"/>), then 1, 2, ... GPU batches until the throughput first drops.
    /// A later block wins only with a strictly higher throughput.
    /// </summary>
    public static PlanSearchResult FlexLlmGen(PlanProblem problem, PlanPlacement? fixedPlacement = null)
    {
        var counter = new Counter(problem, fixedPlacement);
        var clock = Stopwatch.StartNew();
        PlanEvaluation? best = null;
        for (int gbs = 1; ; gbs = gbs < 4 ? gbs + 1 : gbs * 2)
        {
            int maxBatches = MaxNumGpuBatches(counter, gbs);
            if (maxBatches == 0) break;
            double previous = 0;
            for (int nb = 1; nb <= maxBatches; nb++)
            {
                var evaluation = counter.Evaluate(new PlanBlock(gbs, nb));
                if (evaluation.Throughput < previous) break;
                previous = evaluation.Throughput;
                if (evaluation.Throughput > (best?.Throughput ?? 0)) best = evaluation;
            }
        }
        return new PlanSearchResult(best, counter.Solved, clock.Elapsed);
    }

    /// <summary>
    /// The blocks of the grid: GPU batch sizes 1, 2, 3, 4 and then 2^k and 3 * 2^k (a superset of FlexLLMGen's), each with
    /// every number of GPU batches that fits up to <see cref="ExhaustiveNumGpuBatches"/> and steps of 2% beyond it (a
    /// small model on a large disk fits tens of thousands), so it finds the blocks past FlexLLMGen's early break; FlexLLMGen's
    /// own search runs too and its block competes, so the grid is never worse. Ties keep the smaller GPU batch, then the
    /// fewer GPU batches.
    /// </summary>
    public static PlanSearchResult Grid(PlanProblem problem, PlanPlacement? fixedPlacement = null)
    {
        var ranked = Ranked(problem, fixedPlacement);
        return new PlanSearchResult(ranked.Feasible.FirstOrDefault(), ranked.ProgramsSolved, ranked.Elapsed);
    }

    /// <summary>
    /// Every feasible block of the grid (and FlexLLMGen's search's), best first by <see cref="Grid"/>'s order; with
    /// <paramref name="maxBlockSize"/>, only blocks of at most that many sequences (a run with fewer prompts gains
    /// nothing from a larger block).
    /// </summary>
    public static PlanRanking Ranked(PlanProblem problem, PlanPlacement? fixedPlacement = null, long? maxBlockSize = null)
    {
        var counter = new Counter(problem, fixedPlacement);
        var clock = Stopwatch.StartNew();
        var flexLlmGen = maxBlockSize is null ? FlexLlmGen(problem, fixedPlacement) : null;
        var blocks = new List<PlanBlock>();
        foreach (int gbs in GridGpuBatchSizes())
        {
            if (gbs > maxBlockSize) break;
            int maxBatches = MaxNumGpuBatches(counter, gbs, maxBlockSize is { } cap ? (int)Math.Min(int.MaxValue, cap / gbs) : int.MaxValue);
            if (maxBatches == 0) break;
            blocks.AddRange(GridNumGpuBatches(maxBatches).Select(nb => new PlanBlock(gbs, nb)));
        }
        // The programs are independent: solve them on every core.
        var results = new ConcurrentBag<PlanEvaluation>();
        Parallel.ForEach(blocks, block => results.Add(counter.Evaluate(block)));
        if (flexLlmGen?.Best is { } theirs) results.Add(theirs);
        var feasible = results.Where(r => r.Feasible)
            .OrderByDescending(r => r.Throughput)
            .ThenBy(r => r.Block.GpuBatchSize)
            .ThenBy(r => r.Block.NumGpuBatches)
            .ToList();
        return new PlanRanking(feasible, counter.Solved + (flexLlmGen?.ProgramsSolved ?? 0), clock.Elapsed);
    }

    /// <summary>Up to this many GPU batches the grid takes every count.</summary>
    public const int ExhaustiveNumGpuBatches = 256;

    /// <summary>1 ... <see cref="ExhaustiveNumGpuBatches"/>, then counts 2% apart, then <paramref name="max"/> itself.</summary>
    public static IEnumerable<int> GridNumGpuBatches(int max)
    {
        int nb = 1;
        for (; nb <= max && nb <= ExhaustiveNumGpuBatches; nb++) yield return nb;
        for (double next = nb * 1.02; nb < max; next *= 1.02)
        {
            if ((int)next <= nb) continue;
            nb = Math.Min((int)next, max);
            yield return nb;
        }
    }

    /// <summary>1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... (stops short of overflow).</summary>
    public static IEnumerable<int> GridGpuBatchSizes()
    {
        yield return 1;
        for (int power = 2; power <= 1 << 29; power *= 2)
        {
            yield return power;
            yield return power + power / 2;
        }
    }

    /// <summary>
    /// FlexLLMGen's <c>get_nb_ub</c>: the most GPU batches of <paramref name="gpuBatchSize"/> whose block fits, by
    /// doubling until one does not and bisecting between; 0 when one GPU batch does not fit.
    /// </summary>
    private static int MaxNumGpuBatches(Counter counter, int gpuBatchSize, int cap = int.MaxValue)
    {
        if (cap < 1) return 0;
        // A capped count that fits is the answer (feasibility only shrinks as the block grows); else the answer is below it.
        if (cap < int.MaxValue && counter.Evaluate(new PlanBlock(gpuBatchSize, cap)).Feasible) return cap;
        int nb = 1;
        while (counter.Evaluate(new PlanBlock(gpuBatchSize, nb)).Feasible) nb *= 2;
        int left = Math.Max(nb / 2, 1), right = nb;
        while (left < right)
        {
            int mid = (left + right) / 2;
            if (counter.Evaluate(new PlanBlock(gpuBatchSize, mid)).Feasible) left = mid + 1;
            else right = mid;
        }
        return left - 1;
    }

    /// <summary>Evaluates blocks of one problem and counts the programs solved (from any thread).</summary>
    private sealed class Counter(PlanProblem problem, PlanPlacement? fixedPlacement)
    {
        private int _solved;

        public int Solved => Volatile.Read(ref _solved);

        public PlanEvaluation Evaluate(PlanBlock block)
        {
            Interlocked.Increment(ref _solved);
            return CostModel.Evaluate(problem, block, fixedPlacement);
        }
    }
}
