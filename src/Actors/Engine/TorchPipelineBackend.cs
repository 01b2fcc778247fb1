namespace FlexGen.Actors.Engine;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using PlacementTier = FlexGen.Tensors.Placement.TierKind;

/// <summary>
/// The real backend: an OPT model whose weights sit in their homes (GPU / CPU / disk tier, FlexGen's midpoint
/// rule via <see cref="PlacementPlan"/>), and runs that compute with the layer math of FlexGen.Tensors.Layers.
/// Owns the memory tiers (and so its offload folder) and the weight homes; each run owns its cache and buffers.
/// </summary>
public sealed class TorchPipelineBackend : IPipelineBackend
{
    private readonly List<TieredTensor[]> _weightHomes = new();
    private bool _disposed;

    private TorchPipelineBackend(FlexGenSettings settings, Policy policy)
    {
        Settings = settings;
        Policy = policy;
        Config = settings.ResolveModel();
        Layers = OptWeightSpecs.Layers(Config, policy.SepLayer);
        // Weights do not depend on the batch geometry; this plan also rejects impossible policies early.
        WeightPlan = PlacementPlan.Create(Config, policy, promptLen: 1, genLen: 1);
        Directory.CreateDirectory(settings.OffloadDirectory);
        OffloadFolder = Path.Combine(settings.OffloadDirectory, $"flexgen-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(OffloadFolder);
        Tiers = new MemoryTiers(new MemoryTierOptions
        {
            GpuCapacityBytes = settings.GpuCapacityBytes,
            CpuCapacityBytes = settings.CpuCapacityBytes,
            OffloadDirectory = OffloadFolder,
            Disk = new DiskTierOptions(settings.DirectIo, settings.DiskIoThreads),
            PinCpuMemory = policy.PinWeight,
        });
    }

    public FlexGenSettings Settings { get; }

    public Policy Policy { get; }

    public OptConfig Config { get; }

    public int PadTokenId => Config.PadTokenId;

    /// <summary>FlexGen's layer list (index j).</summary>
    public IReadOnlyList<OptLayerSpec> Layers { get; }

    public PlacementPlan WeightPlan { get; }

    public MemoryTiers Tiers { get; }

    /// <summary>This backend's folder under <see cref="FlexGenSettings.OffloadDirectory"/> (deleted on dispose).</summary>
    public string OffloadFolder { get; }

    /// <summary>The weight homes of layer j, in FlexGen's order.</summary>
    public IReadOnlyList<TieredTensor> WeightHomes(int j) => _weightHomes[j];

    public IReadOnlyDictionary<string, long> PeakBytes => Tiers.Stats.ToDictionary(s => s.Tier, s => s.PeakBytes);

    /// <summary>Loads the model's weights into their homes under <paramref name="policy"/>.</summary>
    public static TorchPipelineBackend Create(FlexGenSettings settings, Policy policy)
    {
        var backend = new TorchPipelineBackend(settings, policy);
        try
        {
            backend.LoadWeights();
            return backend;
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    public IPipelineRun CreateRun(BlockRequest block, TraceRecorder trace)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new TorchPipelineRun(this, block, trace);
    }

    public void ResetPeaks()
    {
        // Tier accounting keeps its peak since the backend was created (weights included).
    }

    /// <summary>The physical tier of a placement home.</summary>
    public MemoryTier TierOf(PlacementTier home) => home switch
    {
        PlacementTier.Gpu => Tiers.Gpu,
        PlacementTier.Cpu => Tiers.Cpu,
        PlacementTier.Disk => Tiers.Disk,
        _ => throw new ArgumentOutOfRangeException(nameof(home), home, null),
    };

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var layer in _weightHomes)
        {
            foreach (var weight in layer)
            {
                weight?.Dispose();
            }
        }

        _weightHomes.Clear();
        Tiers.Dispose();
        try
        {
            Directory.Delete(OffloadFolder, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private void LoadWeights()
    {
        using var dummy = Settings.DummyWeights ? new torch.Generator(Settings.DummySeed) : null;
        foreach (var layer in WeightPlan.Layers)
        {
            var homes = new TieredTensor[layer.Weights.Count];
            _weightHomes.Add(homes);
            for (int w = 0; w < layer.Weights.Count; w++)
            {
                var placement = layer.Weights[w];
                var spec = placement.Spec;
                using var scope = torch.NewDisposeScope();
                var source = dummy is null
                    ? ReadWeight(spec)
                    : DummyWeight(spec, dummy);
                var tier = TierOf(placement.Home);
                homes[w] = tier is DeviceTier device
                    ? device.Allocate(spec.Shape.ToArray(), spec.Dtype, spec.FileName, pin: placement.Pinned)
                    : tier.Allocate(spec.Shape.ToArray(), spec.Dtype, spec.FileName);
                TierCopy.CopyFrom(homes[w], null, source);
            }
        }
    }

    private torch.Tensor ReadWeight(WeightSpec spec)
    {
        var folder = Settings.ModelPath ?? throw new ArgumentException("FlexGenSettings.ModelPath is required without DummyWeights", nameof(Settings));
        var path = Path.Combine(folder, spec.FileName);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"weight file '{spec.FileName}' of {Config.Name} not found in {folder}", path);
        }

        var tensor = NpyFile.Read(path);
        if (!tensor.shape.SequenceEqual(spec.Shape))
        {
            throw new InvalidDataException($"weight file {path} has shape ({string.Join(", ", tensor.shape)}), {Config.Name} needs ({string.Join(", ", spec.Shape)})");
        }

        return tensor.dtype == spec.Dtype ? tensor : tensor.to(spec.Dtype);
    }

    // FlexGen's dummy weights are ones; small random values keep the activations meaningful (layer norm of a
    // constant is degenerate) at the same cost.
    private static torch.Tensor DummyWeight(WeightSpec spec, torch.Generator generator) =>
        torch.randn(spec.Shape.ToArray(), torch.ScalarType.Float32, generator: generator).mul_(0.02).to(spec.Dtype);
}
