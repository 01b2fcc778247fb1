namespace FlexGen.Actors.Engine;

using FlexGen.Tensors.Tiers;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;

/// <summary>A block's plan on the real backend: schedule and routes, and the placement of its cache and activations.</summary>
public sealed record TorchBlockPlan(BlockSchedule Schedule, TaskRouter Router, PlacementPlan Placement) : BlockPlan(Schedule, Router);

/// <summary>
/// Builds the plan of each block of a model under one policy, before anything is allocated: the placement of its
/// cache and activations (which refuses a block that does not fit), the routes of its tasks and its schedule.
/// </summary>
internal sealed class BlockPlanner
{
    private readonly ModelConfig _config;
    private readonly Policy _policy;
    private readonly LayerRange? _stage;
    private readonly IReadOnlyList<LayerKind> _layers;
    private readonly IReadOnlyList<LayerWeightHomes> _weightHomes;
    private readonly int _kvRowsPerSequence;
    private readonly TierBudgets _budgets;
    private readonly int _computeDtypeBytes;
    private readonly bool _computesOnCpu;

    /// <param name="weightPlan">Where each layer's weights live (the same for every block).</param>
    /// <param name="kvRowsPerSequence">Rows of dim 1 of the KV cache per sequence (the model's KV heads).</param>
    /// <param name="budgets">What each tier may hold: a block whose homes and working buffers exceed them is refused.</param>
    /// <param name="computeDtypeBytes">Bytes of a compute element (the working buffers).</param>
    /// <param name="stage">The model's layers this planner's <paramref name="layers"/> are when they are one pipeline stage; null: all.</param>
    /// <param name="computesOnCpu">The GPU tier is CPU memory (no CUDA): its compute runs on the CPU.</param>
    public BlockPlanner(ModelConfig config, Policy policy, LayerRange? stage, IReadOnlyList<LayerKind> layers, PlacementPlan weightPlan, int kvRowsPerSequence,
        TierBudgets? budgets = null, int computeDtypeBytes = 2, bool computesOnCpu = false)
    {
        _computesOnCpu = computesOnCpu;
        _budgets = budgets ?? TierBudgets.Unlimited;
        _computeDtypeBytes = computeDtypeBytes;
        _config = config;
        _policy = policy;
        _stage = stage;
        _layers = layers;
        _kvRowsPerSequence = kvRowsPerSequence;
        _weightHomes = weightPlan.Layers.Select(l => new LayerWeightHomes(
            l.Weights.Any(w => w.Home == TierKind.Gpu),
            l.Weights.Any(w => w.Home == TierKind.Cpu),
            l.Weights.Any(w => w.Home == TierKind.Disk))).ToArray();
    }

    /// <param name="prefetchSteps">How many compute steps the loads may run ahead (see <see cref="IPipelineBackend.Plan"/>).</param>
    public TorchBlockPlan Plan(BlockRequest block, int prefetchSteps)
    {
        // The same budget rule as the weights' plan, now with the block's geometry: before its run allocates anything.
        // Grouped compute (PlacementPlan.ComputesBatchesTogether) is decided there, so its working memory is counted.
        var placement = PlacementPlan.Create(_config, _policy, block.PromptLen, block.Generation.GenLen,
            budgets: _budgets, computeDtypeBytes: _computeDtypeBytes, computesOnCpu: _computesOnCpu, stage: _stage, prefetchSteps: prefetchSteps);
        var cache = placement.Cache;
        var routing = new RoutingPlan(
            _layers,
            _weightHomes,
            (int)(cache.GpuLength / _kvRowsPerSequence),
            (int)(cache.CpuLength / _kvRowsPerSequence),
            (int)(cache.DiskLength / _kvRowsPerSequence),
            placement.Activations.Home,
            _policy.CpuCacheCompute);
        var schedule = BlockSchedule.Create(new ScheduleShape(_layers, _policy.NumGpuBatches, block.Generation.GenLen, block.ExecuteGenLen,
            _policy.Overlap, placement.GroupedCompute, FirstStage: _stage?.IsFirst ?? true, LastStage: _stage?.IsLast ?? true,
            WeightLookahead: placement.WeightLookahead, PrefetchSteps: placement.PrefetchSteps));
        return new TorchBlockPlan(schedule, new TaskRouter(routing), placement);
    }
}
