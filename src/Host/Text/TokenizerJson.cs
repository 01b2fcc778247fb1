namespace FlexGen.Host.Text;

using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

/// <summary>
/// A Hugging Face tokenizer.json of a byte-level BPE model (Llama 3, Qwen2): its vocabulary, merges, added (special)
/// tokens and the split pattern of its pre-tokenizer, as a Microsoft.ML.Tokenizers byte-level BPE.
/// </summary>
public static class TokenizerJson
{
    /// <summary>GPT-2's split pattern, for a tokenizer.json whose pre-tokenizer is plain ByteLevel.</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="InvalidDataException">Not a byte-level BPE tokenizer.json (names the file and what is wrong).</exception>
    public static Tokenizer Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            var root = document.RootElement;
            var model = root.GetProperty("model");
            if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
                throw new InvalidDataException($"{path}: model type {type.GetString()} is not BPE.");
            var vocabulary = model.GetProperty("vocab").EnumerateObject().Select(p => KeyValuePair.Create(p.Name, p.Value.GetInt32())).ToList();
            var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.ValueKind == JsonValueKind.Array
                ? string.Join(' ', m.EnumerateArray().Select(e => e.GetString()))
                : m.GetString()!).ToList();
            var special = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var token in added.EnumerateArray())
                    special[token.GetProperty("content").GetString()!] = token.GetProperty("id").GetInt32();
            return Microsoft.ML.Tokenizers.BpeTokenizer.Create(new BpeOptions(vocabulary)
            {
                Merges = merges,
                SpecialTokens = special,
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(new Regex(SplitPattern(root) ?? Gpt2Pattern, RegexOptions.Compiled), special),
            });
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"Cannot read the tokenizer {path}: {ex.Message}", ex);
        }
    }

    // The regex of the pre-tokenizer's Split step (alone or in a Sequence), if any.
    private static string? SplitPattern(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) return null;
        IEnumerable<JsonElement> steps = pre.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray()
            : [pre];
        foreach (var step in steps)
            if (step.TryGetProperty("type", out var t) && t.GetString() == "Split"
                && step.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("Regex", out var regex))
                return regex.GetString();
        return null;
    }
}
