namespace FlexGen.Host.Checkpoints;

using System.Buffers.Binary;
using System.Text.Json;
using TorchSharp;

/// <summary>One tensor's entry in a safetensors header. Offsets are relative to the start of the data section.</summary>
public sealed record SafetensorsEntry(string Name, string Dtype, IReadOnlyList<long> Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Reads a .safetensors file: an 8-byte little-endian header length, a JSON header mapping each tensor name to
/// dtype, shape and data offsets, then the raw little-endian data. Tensors are read on demand.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused (the format's own reference limit is 100 MB).</summary>
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly FileStream _stream;
    private readonly Dictionary<string, SafetensorsEntry> _entries;
    private readonly long _dataStart;

    public string Path { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    public IReadOnlyCollection<SafetensorsEntry> Entries => _entries.Values;

    private SafetensorsFile(string path, FileStream stream, Dictionary<string, SafetensorsEntry> entries,
        IReadOnlyDictionary<string, string> metadata, long dataStart)
    {
        Path = path;
        _stream = stream;
        _entries = entries;
        Metadata = metadata;
        _dataStart = dataStart;
    }

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            var (entries, metadata, dataStart) = ReadHeader(path, stream);
            return new SafetensorsFile(path, stream, entries, metadata, dataStart);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _entries.ContainsKey(name);

    public SafetensorsEntry GetEntry(string name) =>
        _entries.TryGetValue(name, out var e) ? e : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'.");

    /// <summary>Reads one tensor into a new CPU tensor of the file's dtype. The caller owns it.</summary>
    public torch.Tensor Read(string name)
    {
        var entry = GetEntry(name);
        var tensor = torch.empty(entry.Shape.ToArray(), SafetensorsDtype.ToScalarType(entry.Dtype));
        try
        {
            if (entry.End > entry.Begin)
            {
                // The span is the tensor's own CPU storage: the file's little-endian bytes go straight in.
                var target = tensor.bytes;
                _stream.Seek(_dataStart + entry.Begin, SeekOrigin.Begin);
                var buffer = new byte[Math.Min(target.Length, 1 << 22)];
                int done = 0;
                while (done < target.Length)
                {
                    int want = Math.Min(buffer.Length, target.Length - done);
                    _stream.ReadExactly(buffer, 0, want);
                    buffer.AsSpan(0, want).CopyTo(target[done..]);
                    done += want;
                }
            }
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafetensorsEntry>, IReadOnlyDictionary<string, string>, long) ReadHeader(
        string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8) throw new SafetensorsFormatException(path, $"file is {fileLength} bytes, shorter than the 8-byte header length.");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)MaxHeaderBytes || (long)headerLength > fileLength - 8)
            throw new SafetensorsFormatException(path, $"header length {headerLength} does not fit in the file ({fileLength} bytes).");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException ex) { throw new SafetensorsFormatException(path, $"header is not valid JSON ({ex.Message})."); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(path, "header is not a JSON object.");
            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in property.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                entries[property.Name] = ParseEntry(path, property.Name, property.Value, dataLength);
            }
            CheckNoOverlap(path, entries.Values);
            return (entries, metadata, dataStart);
        }
    }

    private static SafetensorsEntry ParseEntry(string path, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsFormatException(path, $"tensor '{name}': entry is not an object.");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new SafetensorsFormatException(path, $"tensor '{name}': missing string field 'dtype'.");
        string dtype = dtypeElement.GetString()!;
        if (!SafetensorsDtype.IsKnown(dtype))
            throw new SafetensorsFormatException(path, $"tensor '{name}': unsupported dtype '{dtype}'.");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new SafetensorsFormatException(path, $"tensor '{name}': missing array field 'shape'.");
        var shape = new List<long>();
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new SafetensorsFormatException(path, $"tensor '{name}': shape entry {d.GetRawText()} is not a non-negative integer.");
            shape.Add(dim);
        }
        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array
            || offsets.GetArrayLength() != 2)
            throw new SafetensorsFormatException(path, $"tensor '{name}': 'data_offsets' must be [begin, end].");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new SafetensorsFormatException(path, $"tensor '{name}': data_offsets {offsets.GetRawText()} are not 0 <= begin <= end.");
        if (end > dataLength)
            throw new SafetensorsFormatException(path, $"tensor '{name}': data_offsets end {end} is past the data section ({dataLength} bytes).");
        var entry = new SafetensorsEntry(name, dtype, shape, begin, end);
        long expected = entry.ElementCount * SafetensorsDtype.ElementSize(dtype);
        if (end - begin != expected)
            throw new SafetensorsFormatException(path,
                $"tensor '{name}': {end - begin} data bytes, but dtype {dtype} and shape [{string.Join(", ", shape)}] need {expected}.");
        return entry;
    }

    /// <summary>Each tensor owns its bytes: two entries sharing data would silently read the same values.</summary>
    private static void CheckNoOverlap(string path, IEnumerable<SafetensorsEntry> entries)
    {
        SafetensorsEntry? previous = null;
        // Empty tensors own no bytes, so they cannot overlap anything.
        foreach (var entry in entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (previous is not null && entry.Begin < previous.End)
                throw new SafetensorsFormatException(path,
                    $"tensors '{previous.Name}' (data_offsets [{previous.Begin}, {previous.End}]) and '{entry.Name}' " +
                    $"(data_offsets [{entry.Begin}, {entry.End}]) overlap; each tensor must have its own bytes.");
            previous = entry;
        }
    }

    public void Dispose() => _stream.Dispose();
}
