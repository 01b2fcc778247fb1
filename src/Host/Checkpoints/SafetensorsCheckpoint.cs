namespace FlexGen.Host.Checkpoints;

using System.Text.Json;
using TorchSharp;

/// <summary>
/// A Hugging Face checkpoint folder in safetensors form: either one <c>model.safetensors</c> or shards listed by
/// <c>model.safetensors.index.json</c>. Gives every tensor by name, wherever it lives.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly Dictionary<string, SafetensorsFile> _fileByTensor;
    private readonly List<SafetensorsFile> _files;

    public string Folder { get; }

    public IReadOnlyCollection<string> TensorNames => _fileByTensor.Keys;

    public int ShardCount => _files.Count;

    private SafetensorsCheckpoint(string folder, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> fileByTensor)
    {
        Folder = folder;
        _files = files;
        _fileByTensor = fileByTensor;
    }

    /// <summary>True when the folder holds a safetensors checkpoint (single file or index).</summary>
    public static bool IsPresent(string folder) =>
        File.Exists(Path.Combine(folder, IndexFileName)) || File.Exists(Path.Combine(folder, SingleFileName));

    public static SafetensorsCheckpoint Open(string folder)
    {
        string indexPath = Path.Combine(folder, IndexFileName);
        string singlePath = Path.Combine(folder, SingleFileName);
        var files = new List<SafetensorsFile>();
        var byTensor = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(indexPath))
            {
                var fileByShard = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
                foreach (var (tensor, shard) in ReadWeightMap(indexPath))
                {
                    if (!fileByShard.TryGetValue(shard, out var file))
                    {
                        string shardPath = ShardPath(folder, indexPath, shard, tensor);
                        if (!File.Exists(shardPath))
                            throw new SafetensorsFormatException(indexPath, $"shard '{shard}' (holding '{tensor}') is missing from {folder}.");
                        file = SafetensorsFile.Open(shardPath);
                        files.Add(file);
                        fileByShard[shard] = file;
                    }
                    if (!file.Contains(tensor))
                        throw new SafetensorsFormatException(file.Path, $"the index says it holds '{tensor}', but its header does not.");
                    byTensor[tensor] = file;
                }
            }
            else if (File.Exists(singlePath))
            {
                var file = SafetensorsFile.Open(singlePath);
                files.Add(file);
                foreach (var entry in file.Entries) byTensor[entry.Name] = file;
            }
            else
            {
                throw new FileNotFoundException(
                    $"No safetensors checkpoint in {folder}: expected {SingleFileName} or {IndexFileName}.");
            }
            return new SafetensorsCheckpoint(folder, files, byTensor);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _fileByTensor.ContainsKey(name);

    public SafetensorsEntry GetEntry(string name) => FileOf(name).GetEntry(name);

    /// <summary>Reads one tensor into a new CPU tensor of its stored dtype. The caller owns it.</summary>
    public torch.Tensor Read(string name) => FileOf(name).Read(name);

    private SafetensorsFile FileOf(string name) =>
        _fileByTensor.TryGetValue(name, out var f) ? f : throw new KeyNotFoundException($"{Folder}: no tensor named '{name}' in the checkpoint.");

    /// <summary>
    /// The path of a shard the index names. The index is data from the checkpoint's author, so a name that leaves
    /// the checkpoint folder (absolute, or through <c>..</c>) is refused rather than read. The check is on the name:
    /// symbolic links in the folder are the file system's owner's, and the Hugging Face cache links every snapshot
    /// file into its <c>blobs/</c> folder.
    /// </summary>
    private static string ShardPath(string folder, string indexPath, string shard, string tensor)
    {
        if (Path.IsPathRooted(shard))
            throw new SafetensorsFormatException(indexPath,
                $"shard '{shard}' (holding '{tensor}') is an absolute path; shards must be named relative to the checkpoint folder {folder}.");
        string root = Path.GetFullPath(folder);
        string shardPath = Path.GetFullPath(Path.Combine(root, shard)); // `..` applied to the name, links not followed
        if (!shardPath.StartsWith(Path.TrimEndingDirectorySeparator(root) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new SafetensorsFormatException(indexPath,
                $"shard '{shard}' (holding '{tensor}') names {shardPath}, outside the checkpoint folder {folder}; shards must be named inside it.");
        return shardPath;
    }

    private static IEnumerable<KeyValuePair<string, string>> ReadWeightMap(string indexPath)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(indexPath)); }
        catch (JsonException ex) { throw new SafetensorsFormatException(indexPath, $"not valid JSON ({ex.Message})."); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new SafetensorsFormatException(indexPath, "missing object field 'weight_map'.");
            var result = new List<KeyValuePair<string, string>>();
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new SafetensorsFormatException(indexPath, $"weight_map entry '{p.Name}' is not a file name.");
                result.Add(new(p.Name, p.Value.GetString()!));
            }
            return result;
        }
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
