namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Models;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// All weights of an OPT model as plain tensors in one place (stored dtype, float16 from a model folder), keyed by
/// FlexGen file name and grouped per layer kind. Owns the tensors: Dispose frees them. The token embedding is one
/// tensor shared by <see cref="InputEmbed"/> and <see cref="OutputEmbed"/> (tied).
/// </summary>
public sealed class OptWeights : IDisposable
{
    private readonly Dictionary<string, Tensor> _byFileName;
    private bool _disposed;

    /// <summary>
    /// Takes ownership of <paramref name="byFileName"/>'s tensors: one per weight spec of <paramref name="config"/>
    /// (see <see cref="OptWeightSpecs"/>), with the spec's shape. Throws naming the missing or misshapen weight.
    /// </summary>
    public OptWeights(OptConfig config, IReadOnlyDictionary<string, Tensor> byFileName)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(byFileName);
        Config = config;
        _byFileName = new Dictionary<string, Tensor>(byFileName);
        foreach (var spec in AllSpecs(config))
        {
            if (!_byFileName.TryGetValue(spec.FileName, out var tensor))
            {
                throw new ArgumentException($"Weight '{spec.FileName}' of {config.Name} is missing.", nameof(byFileName));
            }

            CheckShape(spec, tensor);
        }

        var eps = config.LayerNormEps;
        InputEmbed = InputEmbedWeights.FromOrdered(Pick(OptWeightSpecs.InputEmbed(config)));
        Attention = Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => SelfAttentionWeights.FromOrdered(Pick(OptWeightSpecs.SelfAttention(config, i))) with { LayerNormEps = eps })
            .ToArray();
        Mlp = Enumerable.Range(0, config.NumHiddenLayers)
            .Select(i => MlpWeights.FromOrdered(Pick(OptWeightSpecs.Mlp(config, i))) with { LayerNormEps = eps }).ToArray();
        OutputEmbed = OutputEmbedWeights.FromOrdered(Pick(OptWeightSpecs.OutputEmbed(config))) with { LayerNormEps = eps };
    }

    public OptConfig Config { get; }

    public InputEmbedWeights InputEmbed { get; }

    /// <summary>Self-attention weights of each transformer block.</summary>
    public IReadOnlyList<SelfAttentionWeights> Attention { get; }

    /// <summary>MLP weights of each transformer block.</summary>
    public IReadOnlyList<MlpWeights> Mlp { get; }

    public OutputEmbedWeights OutputEmbed { get; }

    /// <summary>The tensor stored under a FlexGen file name (e.g. <c>decoder.layers.0.fc1.weight</c>).</summary>
    public Tensor this[string fileName] => _byFileName.TryGetValue(fileName, out var t)
        ? t
        : throw new KeyNotFoundException($"No weight named '{fileName}' in {Config.Name}.");

    /// <summary>
    /// Loads every weight of <paramref name="config"/> from <paramref name="modelDir"/> (FlexGen's layout: one .npy
    /// file per parameter, named without extension) into CPU tensors of the stored dtype. Every file is checked first
    /// (see <see cref="WeightFiles.Check"/>).
    /// </summary>
    /// <exception cref="WeightLoadException">The folder or a weight file is missing, corrupt, truncated or disagrees with the config.</exception>
    public static OptWeights Load(string modelDir, OptConfig config)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDir);
        ArgumentNullException.ThrowIfNull(config);
        WeightFiles.Check(modelDir, config.Name, AllSpecs(config));
        return Create(config, spec => WeightFiles.Read(modelDir, spec));
    }

    /// <summary>Loads a model folder that also holds its Hugging Face <c>config.json</c> (as models/opt-tiny).</summary>
    public static OptWeights Load(string modelDir) => Load(modelDir, OptConfig.FromHuggingFaceConfig(modelDir));

    /// <summary>
    /// Random weights with OPT's shapes, stored float16 (FlexGen's dummy weights, seeded; see
    /// <see cref="DummyWeights.FillRandom"/>): the same values as the memory tiers' dummy random weights for the seed.
    /// </summary>
    public static OptWeights Random(OptConfig config, ulong seed, double std = DummyWeights.DefaultStd)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Create(config, spec =>
        {
            var tensor = torch.empty(spec.Shape.ToArray(), spec.Dtype, CPU);
            DummyWeights.FillRandom(tensor, spec, seed, std);
            return tensor;
        });
    }

    /// <summary>One tensor per weight of <paramref name="config"/> from <paramref name="make"/>; all freed on failure.</summary>
    private static OptWeights Create(OptConfig config, Func<WeightSpec, Tensor> make)
    {
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            foreach (var spec in AllSpecs(config))
            {
                tensors[spec.FileName] = make(spec);
            }

            return new OptWeights(config, tensors);
        }
        catch
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }

            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var tensor in _byFileName.Values)
        {
            tensor.Dispose();
        }
    }

    /// <summary>Every distinct weight spec of the model (the tied token embedding once).</summary>
    private static IEnumerable<WeightSpec> AllSpecs(OptConfig config) =>
        OptWeightSpecs.Layers(config, sepLayer: true).SelectMany(l => l.Weights).DistinctBy(s => s.FileName);

    private static void CheckShape(WeightSpec spec, Tensor tensor)
    {
        if (!tensor.shape.SequenceEqual(spec.Shape))
        {
            throw new InvalidDataException(
                $"Weight '{spec.FileName}' has shape ({string.Join(", ", tensor.shape)}); it must be ({string.Join(", ", spec.Shape)}).");
        }

        if (tensor.dtype != spec.Dtype)
        {
            throw new InvalidDataException($"Weight '{spec.FileName}' is {tensor.dtype}; it is stored as {spec.Dtype}.");
        }
    }

    private Tensor[] Pick(IReadOnlyList<WeightSpec> specs) => specs.Select(s => _byFileName[s.FileName]).ToArray();
}
