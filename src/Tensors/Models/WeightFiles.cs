namespace FlexGen.Tensors.Models;

using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>
/// The weight files of a model folder in FlexGen's layout (one .npy per parameter, named as its
/// <see cref="WeightSpec.FileName"/>, no extension): checked against the specs, then read into tensors. Every loader
/// (plain tensors, memory tiers) goes through here, so all report a bad folder the same way.
/// </summary>
public static class WeightFiles
{
    /// <summary>The path of <paramref name="spec"/>'s file in <paramref name="directory"/>.</summary>
    public static string PathOf(string directory, WeightSpec spec) => Path.Combine(directory, spec.FileName);

    /// <summary>
    /// Checks that <paramref name="directory"/> exists and every weight file of <paramref name="specs"/> is present,
    /// a readable .npy, of the spec's shape and dtype, and long enough: before anything is allocated.
    /// </summary>
    /// <exception cref="WeightLoadException">Names the first folder or file that fails, and why.</exception>
    public static void Check(string directory, string modelName, IEnumerable<WeightSpec> specs)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentNullException.ThrowIfNull(specs);
        if (!Directory.Exists(directory))
        {
            throw new WeightLoadException(directory, "the model folder does not exist");
        }

        foreach (var spec in specs.DistinctBy(s => s.FileName))
        {
            Check(PathOf(directory, spec), modelName, spec);
        }
    }

    /// <summary>
    /// Reads <paramref name="spec"/>'s file into <paramref name="destination"/>, a contiguous CPU tensor of the spec's
    /// shape and dtype (see <see cref="NpyFile.ReadInto"/>).
    /// </summary>
    /// <exception cref="WeightLoadException">The file cannot be read (names it).</exception>
    public static void ReadInto(string directory, WeightSpec spec, torch.Tensor destination)
    {
        var path = PathOf(directory, spec);
        Reading(path, () =>
        {
            NpyFile.ReadInto(path, destination);
            return destination;
        });
    }

    /// <summary>
    /// Reads <paramref name="spec"/>'s file into a new CPU tensor of the file's shape and dtype (the spec's, once
    /// <see cref="Check"/> passed).
    /// </summary>
    /// <exception cref="WeightLoadException">The file cannot be read (names it).</exception>
    public static torch.Tensor Read(string directory, WeightSpec spec)
    {
        var path = PathOf(directory, spec);
        return Reading(path, () => NpyFile.Read(path));
    }

    private static T Reading<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is NpyFormatException or IOException && e is not WeightLoadException)
        {
            throw new WeightLoadException(path, $"cannot be read: {e.Message}", e);
        }
    }

    private static void Check(string path, string modelName, WeightSpec spec)
    {
        if (!File.Exists(path))
        {
            throw new WeightLoadException(path, $"the weight file is missing (model {modelName} needs it)");
        }

        NpyHeader header;
        try
        {
            header = NpyFile.ReadHeader(path);
        }
        catch (Exception e) when (e is NpyFormatException or IOException)
        {
            throw new WeightLoadException(path, $"is not a valid .npy file: {e.Message}", e);
        }

        if (!header.Shape.SequenceEqual(spec.Shape))
        {
            throw new WeightLoadException(path, $"shape ({string.Join(", ", header.Shape)}) disagrees with the config of {modelName}, which needs ({string.Join(", ", spec.Shape)})");
        }

        if (header.DType != spec.Dtype)
        {
            throw new WeightLoadException(path, $"dtype {header.DType} ('{header.Descr}') disagrees with the config of {modelName}, which stores {spec.Dtype}");
        }

        var available = new FileInfo(path).Length - header.DataOffset;
        if (available < header.DataLength)
        {
            throw new WeightLoadException(path, $"is truncated: {available:N0} data bytes, {header.DataLength:N0} needed");
        }
    }
}

/// <summary>
/// FlexGen's dummy weights (no files): all ones, or seeded random values. Random values depend only on the seed and the
/// weight's spec (file name, shape, <see cref="WeightSpec.Init"/>), so every loader (plain tensors, memory tiers, any
/// layer grouping) makes the same model.
/// </summary>
public static class DummyWeights
{
    /// <summary>Standard deviation of random dummy weights (a common transformer initialisation).</summary>
    public const double DefaultStd = 0.02;

    /// <summary>FlexGen's _DUMMY_ weights: every element 1.</summary>
    public static void FillOnes(torch.Tensor destination) => destination.fill_(1);

    /// <summary>
    /// Values drawn per weight at most; a larger weight repeats them. A dummy model needs the values' distribution, not
    /// their independence, and drawing normal values (about 0.1-0.3 G/s here) costs far more than writing them to disk.
    /// </summary>
    public const long DrawnElements = 1 << 20;

    /// <summary>
    /// Fills <paramref name="destination"/> (contiguous, any device and dtype) with normal(0, <paramref name="std"/>)
    /// values drawn in float32 from a generator seeded by <paramref name="seed"/> and the spec's file name; a
    /// <see cref="WeightInit.NormScale"/> weight gets 1 + normal(0, std), so a random model keeps its activations in range.
    /// Beyond <see cref="DrawnElements"/> elements the drawn values repeat (<see cref="Pattern"/>).
    /// </summary>
    public static void FillRandom(torch.Tensor destination, WeightSpec spec, ulong seed, double std = DefaultStd)
    {
        ArgumentNullException.ThrowIfNull(destination);
        using var scope = torch.NewDisposeScope();
        long count = destination.NumberOfElements;
        var flat = destination.view(-1); // (count)
        var pattern = Pattern(spec, count, seed, std).to(destination.dtype, destination.device); // (min(count, DrawnElements))
        long drawn = pattern.NumberOfElements;
        for (long at = 0; at < count; at += drawn)
        {
            long length = Math.Min(drawn, count - at);
            flat.narrow(0, at, length).copy_(pattern.narrow(0, 0, length));
        }
    }

    /// <summary>
    /// The float32 values <see cref="FillRandom"/> repeats over a weight of <paramref name="count"/> elements: the first
    /// min(count, <see cref="DrawnElements"/>) of them; element e of the weight is element e mod that of the pattern (so
    /// a disk tier can write the weight as the pattern over and over). The caller owns the result.
    /// </summary>
    public static torch.Tensor Pattern(WeightSpec spec, long count, ulong seed, double std = DefaultStd)
    {
        ArgumentNullException.ThrowIfNull(spec);
        using var generator = new torch.Generator(SeedOf(spec.FileName, seed), torch.CPU);
        var values = torch.randn([Math.Min(count, DrawnElements)], torch.ScalarType.Float32, generator: generator).mul_(std); // (drawn)
        return spec.Init == WeightInit.NormScale ? values.add_(1.0) : values;
    }

    /// <summary>A weight's own seed: <paramref name="seed"/> mixed with a stable (FNV-1a) hash of its file name.</summary>
    internal static ulong SeedOf(string fileName, ulong seed)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in fileName)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        // SplitMix64 finaliser: neighbouring seeds give unrelated streams.
        var z = hash ^ (seed + 0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
