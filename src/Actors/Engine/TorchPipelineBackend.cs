namespace FlexGen.Actors.Engine;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;

/// <summary>
/// The real backend: a model whose weights sit in their homes (GPU / CPU / disk tier, FlexGen's midpoint
/// rule via <see cref="PlacementPlan"/>), and runs that compute with its family's layer math (<see cref="ILayerCompute"/>).
/// Owns the memory tiers (and so its offload folder) and the weight homes; each run owns its cache and buffers.
/// </summary>
public sealed class TorchPipelineBackend : IPipelineBackend
{
    private readonly BlockPlanner _planner;
    private ModelWeights? _weights;
    private bool _disposed;

    private TorchPipelineBackend(EngineSettings settings, Policy policy, PlacementPlan weightPlan, TierBudgets budgets)
    {
        Settings = settings;
        Policy = policy;
        Config = weightPlan.Config;
        Layers = weightPlan.Layers.Select(l => l.Layer).ToArray();
        LayerCompute = Config.Compute();
        WeightPlan = weightPlan;
        Budgets = budgets;
        Stage = settings.Stage ?? LayerRange.All(Layers.Count);
        // Private (700): the folder holds the model's weights and every prompt's KV cache.
        OffloadFolders.CreatePrivate(settings.OffloadDirectory);
        OffloadFolder = Path.Combine(settings.OffloadDirectory, OffloadFolders.NewName());
        OffloadFolders.CreatePrivate(OffloadFolder);
        Tiers = new MemoryTiers(settings.Tiers with { OffloadDirectory = OffloadFolder, PinCpuMemory = policy.PinWeight });
        _planner = new BlockPlanner(Config, policy, settings.Stage, Layers.Select(l => l.Kind).ToArray(), WeightPlan, KvRowsPerSequence,
            budgets, settings.ComputeDtypeBytes, settings.GpuComputesOnCpu);
        if (policy.CompressWeight)
        {
            GpuCompressedWeights = new CompressedTier(Tiers.Gpu, policy.CompWeightConfig);
        }

        if (policy.CompressCache)
        {
            GpuCompressedCache = new CompressedTier(Tiers.Gpu, policy.CompCacheConfig);
            CpuCompressedCache = new CompressedTier(Tiers.Cpu, policy.CompCacheConfig);
        }
    }

    public EngineSettings Settings { get; }

    public Policy Policy { get; }

    public ModelConfig Config { get; }

    /// <summary>The model family's layer math.</summary>
    public ILayerCompute LayerCompute { get; }

    public int PadTokenId => Config.PadTokenId;

    /// <summary>FlexGen's layer list (index j): the stage's layers when this node runs one stage of a pipeline.</summary>
    public IReadOnlyList<LayerSpec> Layers { get; }

    /// <summary>Which of the model's layers <see cref="Layers"/> are (all of them unless <see cref="EngineSettings.Stage"/> says otherwise).</summary>
    public LayerRange Stage { get; }

    public PlacementPlan WeightPlan { get; }

    /// <summary>What each tier may hold (see <see cref="EngineSettings.Budgets"/>); every block's plan is checked against them.</summary>
    public TierBudgets Budgets { get; }

    /// <summary>Rows of the KV cache's dim 1 per sequence (the cache is (positions, batch * rows, head_dim)): the KV heads.</summary>
    public int KvRowsPerSequence => Config.KvHeads;

    /// <summary>Hears the buffer events of the runs created from here on (lifetime tests, diagnostics); null: none.</summary>
    public IBufferObserver? BufferObserver { get; set; }

    public MemoryTiers Tiers { get; }

    /// <summary>This backend's folder under <see cref="EngineSettings.OffloadDirectory"/> (deleted on dispose).</summary>
    public string OffloadFolder { get; }

    /// <summary>Raised once at the end of <see cref="Dispose"/>: the tiers are freed and the offload folder deleted.</summary>
    public event Action? Disposed;

    /// <summary>Where compressed weights are loaded to (compress_weight): they are decompressed by the compute that uses them.</summary>
    public CompressedTier? GpuCompressedWeights { get; }

    /// <summary>Where compressed cache is loaded to for GPU / CPU attention (compress_cache).</summary>
    public CompressedTier? GpuCompressedCache { get; }

    public CompressedTier? CpuCompressedCache { get; }

    /// <summary>The weight homes of layer j, in FlexGen's order (owned by the backend).</summary>
    public IReadOnlyList<TieredTensor> WeightHomes(int j) => _weights!.Layer(j);

    /// <summary>Peak bytes per physical tier ("gpu", "cpu", "disk") since <see cref="ResetPeaks"/> (weights included).</summary>
    public IReadOnlyDictionary<string, long> PeakBytes => Tiers.Stats.ToDictionary(s => s.Tier, s => s.PeakBytes);

    /// <summary>
    /// Loads the model's weights into their homes under <paramref name="policy"/>; <paramref name="weightProgress"/>
    /// hears of each layer loaded. When <paramref name="cancellationToken"/> is signalled during the load, throws
    /// <see cref="OperationCanceledException"/> having freed the weights loaded so far and deleted the offload folder.
    /// Sets libtorch's intra-op threads to <see cref="EngineSettings.ComputeThreadsFor"/> the policy (process-wide) first.
    /// </summary>
    public static TorchPipelineBackend Create(EngineSettings settings, Policy policy, IProgress<WeightLoadProgress>? weightProgress = null,
        CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var weightPlan = PlanWeights(settings, policy, out var budgets);
        TorchRuntime.SetComputeThreads(settings.ComputeThreadsFor(policy));
        var backend = new TorchPipelineBackend(settings, policy, weightPlan, budgets);
        try
        {
            backend.LoadWeights(weightProgress, cancellationToken);
            return backend;
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The weights' plan, before anything is allocated (no tier, no offload folder): the budgets refuse a model whose
    /// weights plus a one-token block's buffers do not fit (by the byte formulas first), and every weight file is
    /// checked (present, shape, dtype: headers only).
    /// </summary>
    /// <exception cref="TierCapacityExceededException">a tier's budget is exceeded.</exception>
    /// <exception cref="WeightLoadException">a weight file is missing or disagrees with the config.</exception>
    private static PlacementPlan PlanWeights(EngineSettings settings, Policy policy, out TierBudgets budgets)
    {
        var config = settings.ResolveModel();
        budgets = settings.ResolveBudgets();
        // Weights do not depend on the batch geometry; this plan also rejects impossible policies early.
        var plan = PlacementPlan.Create(config, policy, promptLen: 1, genLen: 1, budgets: budgets, computeDtypeBytes: settings.ComputeDtypeBytes,
            computesOnCpu: settings.GpuComputesOnCpu, stage: settings.Stage);
        if (!settings.DummyWeights)
        {
            WeightFiles.Check(settings.ModelPath ?? throw new ArgumentException("EngineSettings.ModelPath is required without DummyWeights", nameof(settings)),
                config.Name, plan.Layers.SelectMany(l => l.Weights).Select(w => w.Spec));
        }

        return plan;
    }

    public BlockPlan Plan(BlockRequest block, int prefetchSteps)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _planner.Plan(block, prefetchSteps);
    }

    public IPipelineRun CreateRun(RunId id, BlockRequest block, BlockPlan plan, TraceRecorder trace)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var torchPlan = plan as TorchBlockPlan ?? throw new ArgumentException($"a plan of {nameof(TorchPipelineBackend)}.{nameof(Plan)} is needed, got {plan.GetType().Name}", nameof(plan));
        return new TorchPipelineRun(this, id, block, torchPlan, trace, BufferObserver);
    }

    /// <summary>
    /// Starts a request's peak window: each tier's peak becomes what it holds now, the resident weights (part of every
    /// request's footprint); the previous request's cache and buffers are already freed.
    /// </summary>
    public void ResetPeaks() => Tiers.ResetPeaks();

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            _weights?.Dispose();
            _weights = null;
            GpuCompressedWeights?.Dispose();
            GpuCompressedCache?.Dispose();
            CpuCompressedCache?.Dispose();
            Tiers.Dispose();
            try
            {
                Directory.Delete(OffloadFolder, recursive: true);
            }
            catch (DirectoryNotFoundException)
            {
            }
        }
        finally
        {
            Disposed?.Invoke();
        }
    }

    private void LoadWeights(IProgress<WeightLoadProgress>? progress, CancellationToken cancellationToken)
    {
        var source = Settings.DummyWeights
            ? WeightSource.Dummy(random: true, seed: (int)Settings.DummySeed)
            : WeightSource.FromDirectory(Settings.ModelPath ?? throw new ArgumentException("EngineSettings.ModelPath is required without DummyWeights", nameof(Settings)));
        _weights = ModelWeights.Load(WeightPlan, Tiers, source, progress, cancellationToken, Settings.Compute.Dtype);
    }
}
