namespace FlexGen.Actors.Tests.Support;

using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using System.Collections.Concurrent;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Policies;

/// <summary>
/// A recording tier: a backend whose runs do no math, only record which thread ran which part, optionally
/// take some time per part, and fail or cancel at a chosen part. Output ids are a function of the prompt so
/// tests can check rows come back in order and padding is dropped.
/// </summary>
public sealed class RecordingBackend : IPipelineBackend
{
    private readonly Func<Policy, RoutingPlan> _plan;

    public RecordingBackend(Policy policy, int numBlocks, Func<Policy, RoutingPlan>? plan = null)
    {
        Policy = policy;
        NumBlocks = numBlocks;
        _plan = plan ?? (p => PlanFor(p, numBlocks));
    }

    public Policy Policy { get; }

    public int NumBlocks { get; }

    public int PadTokenId => 1;

    /// <summary>Time each part takes (a sleep), per tier.</summary>
    public Func<BlockTask, PipelineActorKind, TimeSpan> PartDuration { get; set; } = (_, _) => TimeSpan.Zero;

    /// <summary>Called at the start of each part (throw from it to inject a fault).</summary>
    public Action<BlockTask, PipelineActorKind>? OnPart { get; set; }

    /// <summary>Called at each release, after it was recorded in <see cref="RecordingRun.Releases"/>.</summary>
    public Action<BlockTask, PipelineActorKind>? OnRelease { get; set; }

    /// <summary>Throw from the run's Trace getter (a failure outside any task part).</summary>
    public bool BreakTrace { get; set; }

    public ConcurrentQueue<RecordingRun> Runs { get; } = new();

    public bool Disposed { get; private set; }

    public IReadOnlyDictionary<string, long> PeakBytes => new Dictionary<string, long> { ["gpu"] = 0, ["cpu"] = 0, ["disk"] = 0 };

    public BlockPlan Plan(BlockRequest block, int prefetchSteps)
    {
        var routing = _plan(Policy);
        return new BlockPlan(BlockSchedule.Create(new ScheduleShape(routing.Layers, Policy.NumGpuBatches, block.Generation.GenLen, block.ExecuteGenLen, Policy.Overlap,
            PrefetchSteps: prefetchSteps)),
            new TaskRouter(routing));
    }

    public IPipelineRun CreateRun(RunId id, BlockRequest block, BlockPlan plan, TraceRecorder trace)
    {
        var run = new RecordingRun(this, id, block, trace, plan);
        Runs.Enqueue(run);
        return run;
    }

    public void ResetPeaks()
    {
    }

    public void Dispose() => Disposed = true;

    /// <summary>
    /// A placement that exercises every route: weights of even layers on disk, odd layers on CPU, layer 1 split;
    /// cache from the policy's percentages (rows split by whole sequences), activations from the act percentages.
    /// </summary>
    public static RoutingPlan PlanFor(Policy policy, int numBlocks)
    {
        var layers = LayerKinds.BuildLayers(numBlocks, policy.SepLayer);
        var weights = layers.Select((_, j) => j switch
        {
            1 => new LayerWeightHomes(false, true, true),
            _ when policy.WGpuPercent >= 100 => LayerWeightHomes.AllOn(TierKind.Gpu),
            _ => LayerWeightHomes.AllOn(j % 2 == 0 ? TierKind.Disk : TierKind.Cpu),
        }).ToArray();
        int rows = policy.GpuBatchSize;
        int gpu = (int)(rows * policy.CacheGpuPercent / 100);
        int cpu = (int)(rows * policy.CacheCpuPercent / 100);
        var act = policy.ActGpuPercent >= 100 ? TierKind.Gpu : policy.ActCpuPercent >= 100 ? TierKind.Cpu : TierKind.Disk;
        return new RoutingPlan(layers, weights, gpu, cpu, rows - gpu - cpu, act, policy.CpuCacheCompute);
    }
}

public sealed class RecordingRun : IPipelineRun
{
    private readonly RecordingBackend _backend;
    private readonly TraceRecorder _trace;
    private volatile bool _cancelled;

    public RecordingRun(RecordingBackend backend, RunId id, BlockRequest block, TraceRecorder trace, BlockPlan plan)
    {
        _backend = backend;
        _trace = trace;
        Id = id;
        Block = block;
        Plan = plan;
    }

    public RunId Id { get; }

    public BlockRequest Block { get; }

    /// <summary>The plan the coordinator made for this block (tests read the schedule and routes from it).</summary>
    public BlockPlan Plan { get; }

    public BlockSchedule Schedule => Plan.Schedule;

    public TraceRecorder Trace => _backend.BreakTrace ? throw new InvalidOperationException("trace broken on purpose") : _trace;

    public TaskRouter Router => Plan.Router;

    /// <summary>(tier, managed thread id) of every part run.</summary>
    public ConcurrentQueue<(PipelineActorKind Tier, BlockTask Task, int Thread)> Parts { get; } = new();

    public bool IsCancelled => _cancelled;

    public bool Disposed { get; private set; }

    public IReadOnlyList<PipelineActorKind> Route(BlockTask task) => Plan.Route(task);

    /// <summary>(tier, task) of every release, in the order the actors called it.</summary>
    public ConcurrentQueue<(PipelineActorKind Tier, BlockTask Task)> Releases { get; } = new();

    public PartResult Execute(BlockTask task, PipelineActorKind tier)
    {
        if (Disposed)
        {
            throw new ObjectDisposedException(nameof(RecordingRun), $"{task} ran on {tier} after the run was disposed");
        }

        Parts.Enqueue((tier, task, Environment.CurrentManagedThreadId));
        _backend.OnPart?.Invoke(task, tier);
        var duration = _backend.PartDuration(task, tier);
        if (duration > TimeSpan.Zero)
        {
            Thread.Sleep(duration);
        }

        return new PartResult(1);
    }

    public void Release(BlockTask task, PipelineActorKind tier)
    {
        Releases.Enqueue((tier, task));
        _backend.OnRelease?.Invoke(task, tier);
    }

    public void Cancel() => _cancelled = true;

    public long[][] OutputIds() =>
        Block.PromptIds.Select(row => Enumerable.Range(0, Block.Generation.GenLen).Select(t => t < Block.ExecuteGenLen ? row[^1] * 100 + t : 1L).ToArray()).ToArray();

    public void Dispose() => Disposed = true;
}
