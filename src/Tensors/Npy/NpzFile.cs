namespace FlexGen.Tensors.Npy;

using System.Collections;
using System.IO.Compression;
using static TorchSharp.torch;

/// <summary>Reads and writes NumPy .npz archives (a zip of .npy entries, stored or deflated).</summary>
public static class NpzFile
{
    /// <summary>
    /// Reads every array of the archive into CPU tensors, keyed by entry name without ".npy"
    /// (<c>np.savez(f, ids=...)</c> gives key <c>ids</c>). The caller disposes the result.
    /// </summary>
    public static NamedTensors Read(string path)
    {
        using var archive = OpenArchive(path);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var entry in archive.Entries)
            {
                if (entry.FullName.EndsWith('/'))
                {
                    continue; // a directory entry holds no data
                }
                var key = KeyOf(entry, path);
                tensors.Add(key, ReadEntry(entry, path));
            }
        }
        catch
        {
            foreach (var tensor in tensors.Values)
            {
                tensor.Dispose();
            }
            throw;
        }
        return new NamedTensors(tensors);
    }

    /// <summary>Reads one array (key without ".npy") from the archive.</summary>
    public static Tensor ReadArray(string path, string key)
    {
        using var archive = OpenArchive(path);
        var entry = archive.GetEntry(key + ".npy") ?? archive.GetEntry(key)
            ?? throw new KeyNotFoundException(
                $"{path}: no array '{key}' (arrays: {string.Join(", ", archive.Entries.Select(e => e.FullName))})");
        return ReadEntry(entry, path);
    }

    /// <summary>
    /// Writes the arrays as an .npz archive (deflated unless <paramref name="level"/> says otherwise),
    /// replacing any file at <paramref name="path"/>.
    /// </summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> arrays,
        CompressionLevel level = CompressionLevel.Optimal)
    {
        var list = arrays.ToList();
        foreach (var (key, tensor) in list)
        {
            NpyFile.CheckWritable(tensor, $"{path}!{key}.npy");
        }
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        using var archive = new ZipArchive(file, ZipArchiveMode.Create);
        foreach (var (key, tensor) in list)
        {
            using var stream = archive.CreateEntry(key + ".npy", level).Open();
            NpyFile.WriteArray(stream, tensor);
        }
    }

    static ZipArchive OpenArchive(string path)
    {
        try
        {
            return ZipFile.OpenRead(path);
        }
        catch (InvalidDataException e)
        {
            throw new NpyFormatException(path, $"not a valid .npz (zip) archive: {e.Message}", e);
        }
    }

    static string KeyOf(ZipArchiveEntry entry, string path)
    {
        if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal))
        {
            throw new NpyFormatException($"{path}!{entry.FullName}", "entry is not a .npy array (its name lacks .npy)");
        }
        return entry.FullName[..^4];
    }

    static Tensor ReadEntry(ZipArchiveEntry entry, string path)
    {
        var name = $"{path}!{entry.FullName}";
        try
        {
            using var stream = entry.Open();
            var header = NpyHeaderCodec.Read(stream, name);
            NpyFile.CheckDataLength(header, entry.Length - header.DataOffset, name);
            return NpyFile.ReadNewTensor(stream, header, name);
        }
        catch (InvalidDataException e)
        {
            throw new NpyFormatException(name, $"corrupt compressed data: {e.Message}", e);
        }
    }
}

/// <summary>Tensors by name, read from an .npz archive; disposing it disposes them all.</summary>
public sealed class NamedTensors : IReadOnlyDictionary<string, Tensor>, IDisposable
{
    readonly Dictionary<string, Tensor> _tensors;

    internal NamedTensors(Dictionary<string, Tensor> tensors) => _tensors = tensors;

    public Tensor this[string key] => _tensors.TryGetValue(key, out var tensor)
        ? tensor
        : throw new KeyNotFoundException($"no array '{key}' (arrays: {string.Join(", ", _tensors.Keys)})");

    public IEnumerable<string> Keys => _tensors.Keys;
    public IEnumerable<Tensor> Values => _tensors.Values;
    public int Count => _tensors.Count;
    public bool ContainsKey(string key) => _tensors.ContainsKey(key);

    public bool TryGetValue(string key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out Tensor value) =>
        _tensors.TryGetValue(key, out value);

    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => _tensors.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public void Dispose()
    {
        foreach (var tensor in _tensors.Values)
        {
            tensor.Dispose();
        }
        _tensors.Clear();
    }
}
