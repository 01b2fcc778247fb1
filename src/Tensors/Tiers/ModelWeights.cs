namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using TorchSharp;

/// <summary>Where weights come from.</summary>
public enum WeightSourceKind
{
    /// <summary>A model folder in FlexGen's layout: one .npy per parameter, named as in the weight specs.</summary>
    Files,

    /// <summary>FlexGen's _DUMMY_ path: no files, every weight all ones (as FlexGen).</summary>
    DummyOnes,

    /// <summary>
    /// No files: seeded small random values (normal, std 0.02; layer-norm weights 1 + that), deterministic per weight
    /// file name and seed: the same values as a family's plain-tensor random weights with the same seed (see <see cref="DummyWeights"/>).
    /// </summary>
    DummyRandom,
}

/// <summary>How to load the weights of a placement plan.</summary>
/// <param name="Source">Files or dummy weights.</param>
/// <param name="ModelDirectory">The model folder (required for <see cref="WeightSourceKind.Files"/>).</param>
/// <param name="Seed">Seed of <see cref="WeightSourceKind.DummyRandom"/>.</param>
public sealed record WeightSource(WeightSourceKind Source, string? ModelDirectory = null, int Seed = 0)
{
    public static WeightSource FromDirectory(string modelDirectory) => new(WeightSourceKind.Files, modelDirectory);

    public static WeightSource Dummy(bool random = false, int seed = 0) => new(random ? WeightSourceKind.DummyRandom : WeightSourceKind.DummyOnes, null, seed);
}

/// <summary>Progress of <see cref="ModelWeights.Load"/>, reported once per layer after that layer is in its tiers.</summary>
/// <param name="Layer">The layer just loaded (j, in execution order, from 0).</param>
/// <param name="LayerCount">Layers of the model (N).</param>
/// <param name="BytesLoaded">Uncompressed bytes of the weights of layers 0..j.</param>
/// <param name="TotalBytes">Uncompressed bytes of every weight of the model.</param>
public sealed record WeightLoadProgress(int Layer, int LayerCount, long BytesLoaded, long TotalBytes);

/// <summary>
/// Every weight of a model, each in the home tier its <see cref="PlacementPlan"/> gives (compressed on the way where
/// the plan says so), owned here and freed on dispose. <see cref="Layer"/> gives one layer's homes, which the engine
/// copies to a compute tier through <see cref="TierCopy"/> (FlexGen's <c>load_weight</c>).
/// </summary>
public sealed class ModelWeights : IDisposable
{
    private readonly TieredTensor[][] _layers;

    private ModelWeights(PlacementPlan plan, TieredTensor[][] layers)
    {
        Plan = plan;
        _layers = layers;
    }

    public PlacementPlan Plan { get; }

    /// <summary>Number of layers (j) in execution order.</summary>
    public int LayerCount => _layers.Length;

    /// <summary>The home tensors of layer <paramref name="layer"/>, in the weight specs' order (owned here).</summary>
    public IReadOnlyList<TieredTensor> Layer(int layer) => _layers[layer];

    /// <summary>
    /// Loads every weight of <paramref name="plan"/> into its home among <paramref name="tiers"/>. Weight files are all
    /// checked (present, .npy, shape and dtype as the config says, long enough) before anything is allocated; on any
    /// failure everything allocated so far is freed. <paramref name="progress"/> hears of each layer, in order, on the
    /// loading thread. Plain weights homed on the GPU tier (the compute tier) are kept in <paramref name="computeDtype"/>,
    /// converted once here so that no compute step converts them (null: float32 when the plan's compute element is 4
    /// bytes, else the weights' own dtype); its element size must be the plan's <see cref="PlacementPlan.ComputeDtypeBytes"/>,
    /// which the plan's GPU bytes count. Plain weights on other tiers are kept in it too when its elements are as wide as
    /// the stored ones (bfloat16 for float16); otherwise they, and compressed ones, keep their stored dtype.
    /// </summary>
    /// <exception cref="WeightLoadException">A weight file is missing, corrupt, truncated or disagrees with the config.</exception>
    /// <exception cref="TierBudgetExceededException">A tier's budget would be exceeded.</exception>
    public static ModelWeights Load(PlacementPlan plan, MemoryTiers tiers, WeightSource options,
        IProgress<WeightLoadProgress>? progress = null, CancellationToken cancellationToken = default,
        torch.ScalarType? computeDtype = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(tiers);
        ArgumentNullException.ThrowIfNull(options);
        if (computeDtype is { } given && WeightSpec.DtypeSize(given) != plan.ComputeDtypeBytes)
        {
            throw new ArgumentException(
                $"Compute dtype {given} has {WeightSpec.DtypeSize(given)}-byte elements; the plan counts {plan.ComputeDtypeBytes}.",
                nameof(computeDtype));
        }
        if (options.Source == WeightSourceKind.Files)
        {
            WeightFiles.Check(
                options.ModelDirectory ?? throw new ArgumentException("WeightSource.ModelDirectory is required to load weights from files.", nameof(options)),
                plan.Config.Name,
                plan.Layers.SelectMany(l => l.Weights).Select(w => w.Spec));
        }

        var compressedTiers = new Dictionary<MemoryTier, CompressedTier>();
        using var tiles = new DummyTiles(plan, options, computeDtype);
        var layers = new TieredTensor[plan.Layers.Count][];
        long totalBytes = plan.Layers.Sum(l => l.Weights.Sum(w => w.Spec.Bytes));
        long loadedBytes = 0;
        try
        {
            for (var j = 0; j < plan.Layers.Count; j++)
            {
                var placements = plan.Layers[j].Weights;
                layers[j] = new TieredTensor[placements.Count];
                for (var w = 0; w < placements.Count; w++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    layers[j][w] = LoadOne(plan, tiers, options, placements[w], compressedTiers, j, computeDtype, tiles);
                    loadedBytes += placements[w].Spec.Bytes;
                }

                progress?.Report(new WeightLoadProgress(j, layers.Length, loadedBytes, totalBytes));
            }

            return new ModelWeights(plan, layers);
        }
        catch
        {
            foreach (var tensor in layers.Where(l => l is not null).SelectMany(l => l).Where(t => t is not null))
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    public void Dispose()
    {
        foreach (var tensor in _layers.SelectMany(l => l))
        {
            tensor.Dispose();
        }
    }

    private static TieredTensor LoadOne(PlacementPlan plan, MemoryTiers tiers, WeightSource options, WeightPlacement placement,
        Dictionary<MemoryTier, CompressedTier> compressedTiers, int layer, torch.ScalarType? computeDtype, DummyTiles tiles)
    {
        var spec = placement.Spec;
        var shape = spec.Shape.ToArray();
        var home = tiers[placement.Home];
        var name = $"j{layer}.{spec.FileName}";
        var dtype = HomeDtype(plan, placement, computeDtype);

        // Read (or make) the float16 values where they can go straight in: the home itself when it is CPU memory.
        if (!placement.Compressed && home is DeviceTier { Device.type: DeviceType.CPU } memory)
        {
            var tensor = memory.Allocate(shape, dtype, name, pin: placement.Pinned);
            try
            {
                if (dtype == spec.Dtype)
                {
                    Fill(tensor.Data, options, placement);
                }
                else
                {
                    using var values = torch.empty(shape, spec.Dtype, torch.CPU).DetachFromDisposeScope();
                    Fill(values, options, placement);
                    tensor.Data.copy_(values); // converted once, here
                }

                return tensor;
            }
            catch
            {
                tensor.Dispose();
                throw;
            }
        }

        // Dummy weights on disk: written as their repeating pattern, never made whole in memory (disk speed).
        if (DummyTiles.Writes(options, placement) && home is DiskTier disk)
        {
            var file = disk.Allocate(shape, dtype, name);
            try
            {
                using var tile = tiles.Take(placement);
                TierCopy.FillTiled(file, tile);
                return file;
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }

        using var read = torch.empty(shape, spec.Dtype, torch.CPU).DetachFromDisposeScope();
        Fill(read, options, placement);
        using var staging = dtype == spec.Dtype ? read.alias() : read.to(dtype);
        MemoryTier destination = home;
        if (placement.Compressed)
        {
            if (!compressedTiers.TryGetValue(home, out var compressed))
            {
                // FlexLLMGen quantizes weights as it loads them, on the CPU in float32 (not in the GPU's float16 as the cache).
                compressed = new CompressedTier(home, plan.Policy.CompWeightConfig, QuantizationArithmetic.Float32);
                compressedTiers[home] = compressed;
            }

            destination = compressed;
        }

        var stored = destination.Allocate(shape, dtype, name);
        try
        {
            TierCopy.CopyFrom(stored, null, staging);
            return stored;
        }
        catch
        {
            stored.Dispose();
            throw;
        }
    }

    /// <summary>The dtype a weight is kept in at its home.</summary>
    internal static torch.ScalarType HomeDtype(PlacementPlan plan, WeightPlacement placement, torch.ScalarType? computeDtype)
    {
        var spec = placement.Spec;
        // The compute tier keeps plain weights in the compute dtype (its placement bytes count that dtype). Other tiers
        // do too when its elements are as wide as the stored ones (bfloat16 for float16): same bytes, and no load
        // converts them (float16 -> bfloat16 on the CPU costs about as much as reading the weight from disk).
        var compute = computeDtype ?? (plan.ComputeDtypeBytes == 4 ? torch.ScalarType.Float32 : spec.Dtype);
        return placement.Compressed ? spec.Dtype
            : placement.Home == TierKind.Gpu ? compute
            : OffComputeHomeDtype(compute, spec.Dtype);
    }

    /// <summary>
    /// The dtype a plain weight stored as <paramref name="stored"/> is kept in on the CPU and disk tiers: the compute dtype
    /// when its elements are as wide (bfloat16 for float16), else the stored one, which the compute widens at its use.
    /// </summary>
    public static torch.ScalarType OffComputeHomeDtype(torch.ScalarType compute, torch.ScalarType stored) =>
        WeightSpec.DtypeSize(compute) == WeightSpec.DtypeSize(stored) ? compute : stored;

    private static void Fill(torch.Tensor destination, WeightSource options, WeightPlacement placement)
    {
        switch (options.Source)
        {
            case WeightSourceKind.Files:
                WeightFiles.ReadInto(options.ModelDirectory!, placement.Spec, destination);
                break;
            case WeightSourceKind.DummyOnes:
                DummyWeights.FillOnes(destination);
                break;
            case WeightSourceKind.DummyRandom:
                DummyWeights.FillRandom(destination, placement.Spec, unchecked((ulong)options.Seed));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(options), options.Source, "Unknown weight source.");
        }
    }
}
