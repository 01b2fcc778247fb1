namespace FlexGen.Host.Checkpoints;

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;

/// <summary>Writes tensors to a .safetensors file (header padded with spaces to an 8-byte boundary).</summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new Dictionary<string, object>(StringComparer.Ordinal);
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, tensor) in list)
        {
            if (tensor.device_type != DeviceType.CPU)
                throw new ArgumentException($"Tensor '{name}' must be on the CPU to be written to {path}.", nameof(tensors));
            long size = tensor.numel() * tensor.element_size();
            header[name] = new
            {
                dtype = SafetensorsDtype.FromScalarType(tensor.dtype),
                shape = tensor.shape,
                data_offsets = new[] { offset, offset + size },
            };
            offset += size;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;
        var headerBytes = new byte[padded];
        json.CopyTo(headerBytes, 0);
        headerBytes.AsSpan(json.Length).Fill((byte)' ');

        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(headerBytes);
        foreach (var (_, tensor) in list)
        {
            using var contiguous = tensor.contiguous();
            stream.Write(contiguous.bytes);
        }
    }

    /// <summary>Writes a model.safetensors.index.json that maps each tensor name to its shard file name.</summary>
    public static void WriteIndex(string path, IReadOnlyDictionary<string, string> weightMap, long totalSize)
    {
        var index = new { metadata = new { total_size = totalSize }, weight_map = weightMap };
        File.WriteAllText(path, JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }), new UTF8Encoding(false));
    }
}
