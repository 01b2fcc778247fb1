namespace FlexGen.Host.Cli;

using System.Text.Json;
using FlexGen.Host.Hosting;
using FlexGen.Host.Text;

/// <summary>One prompt of a batch job.</summary>
/// <param name="Id">The caller's id (unique in the file); the output line carries it.</param>
/// <param name="Line">1-based line of the prompts file.</param>
/// <param name="PromptIds">The prompt's token ids (BOS included for text prompts), unpadded.</param>
/// <param name="MaxTokens">New tokens to generate (<c>max_tokens</c>, default <c>--gen-len</c>).</param>
/// <param name="IsText">Whether the line gave <c>prompt</c> (text) rather than <c>prompt_ids</c>.</param>
public sealed record BatchPrompt(string Id, int Line, long[] PromptIds, int MaxTokens, bool IsText);

/// <summary>
/// <c>--prompts-file</c>: JSON Lines, one object per line with <c>id</c> (string, required, unique), <c>prompt</c> (text,
/// needs the model's tokenizer) or <c>prompt_ids</c> (token ids), and optional <c>max_tokens</c>. Blank lines are skipped.
/// Every line is checked before anything runs; a bad one is a <see cref="UsageException"/> naming the line and the field.
/// </summary>
public static class PromptsFile
{
    public const string Flag = "--prompts-file";

    private static readonly string[] Fields = ["id", "prompt", "prompt_ids", "max_tokens"];

    public static IReadOnlyList<BatchPrompt> Read(string path, ResolvedModel model, BpeTokenizer? tokenizer, int defaultMaxTokens)
    {
        if (Directory.Exists(path)) throw new UsageException($"{Flag} {path}: is a folder, not a file.");
        if (!File.Exists(path)) throw new UsageException($"{Flag} {path}: file not found.");
        var prompts = new List<BatchPrompt>();
        var lineOfId = new Dictionary<string, int>(StringComparer.Ordinal);
        int number = 0;
        try
        {
            foreach (string text in File.ReadLines(path))
            {
                number++;
                if (string.IsNullOrWhiteSpace(text)) continue;
                var prompt = ParseLine(text, number, model, tokenizer, defaultMaxTokens, path);
                if (lineOfId.TryGetValue(prompt.Id, out int first))
                    throw new UsageException($"{Flag} {path}: line {number}: id \"{prompt.Id}\" is a duplicate of line {first}'s (ids must be unique).");
                lineOfId.Add(prompt.Id, number);
                prompts.Add(prompt);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{Flag} {path}: cannot be read ({ex.Message}).");
        }
        if (prompts.Count == 0) throw new UsageException($"{Flag} {path}: no prompts (one JSON object per line: {{\"id\": \"...\", \"prompt_ids\": [...]}}).");
        return prompts;
    }

    private static BatchPrompt ParseLine(string text, int line, ResolvedModel model, BpeTokenizer? tokenizer, int defaultMaxTokens, string path)
    {
        UsageException Bad(string what) => new($"{Flag} {path}: line {line}: {what}");

        JsonDocument document;
        try { document = JsonDocument.Parse(text); }
        catch (JsonException ex) { throw Bad($"not valid JSON ({ex.Message.Split(" LineNumber:")[0].TrimEnd('.')})."); }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad($"expected a JSON object, got {Kind(root)}.");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!Fields.Contains(property.Name, StringComparer.Ordinal))
                    throw Bad($"unknown field \"{property.Name}\" (fields: {string.Join(", ", Fields)}).");
                if (!seen.Add(property.Name)) throw Bad($"{property.Name}: given twice.");
            }

            if (!root.TryGetProperty("id", out var idElement)) throw Bad("id: missing (every line needs a string \"id\").");
            if (idElement.ValueKind != JsonValueKind.String) throw Bad($"id: must be a string, got {Kind(idElement)}.");
            string id = idElement.GetString()!;
            if (id.Length == 0) throw Bad("id: must not be empty.");

            int maxTokens = defaultMaxTokens;
            if (root.TryGetProperty("max_tokens", out var max))
            {
                if (max.ValueKind != JsonValueKind.Number || !max.TryGetInt32(out maxTokens) || maxTokens < 1)
                    throw Bad($"max_tokens: must be an integer >= 1, got {max.GetRawText()}.");
            }

            bool hasText = root.TryGetProperty("prompt", out var promptElement);
            bool hasIds = root.TryGetProperty("prompt_ids", out var idsElement);
            if (hasText && hasIds) throw Bad("prompt and prompt_ids: give one of them, not both.");
            if (!hasText && !hasIds) throw Bad("prompt or prompt_ids: missing (give the text or the token ids).");
            long[] ids;
            if (hasText)
            {
                if (promptElement.ValueKind != JsonValueKind.String) throw Bad($"prompt: must be a string, got {Kind(promptElement)}.");
                if (tokenizer is null)
                    throw Bad($"prompt: text needs {BpeTokenizer.FilesOf(model.Config.Family.Tokenizer(model.Config).Kind)} in the model folder ({model.Location.Folder ?? model.Config.Name}); give prompt_ids instead.");
                ids = tokenizer.Encode(promptElement.GetString()!).Select(i => (long)i).ToArray();
                if (ids.Length == 0) throw Bad("prompt: encodes to no tokens.");
            }
            else
            {
                if (idsElement.ValueKind != JsonValueKind.Array) throw Bad($"prompt_ids: must be an array of token ids, got {Kind(idsElement)}.");
                ids = new long[idsElement.GetArrayLength()];
                if (ids.Length == 0) throw Bad("prompt_ids: must not be empty.");
                int i = 0;
                foreach (var element in idsElement.EnumerateArray())
                {
                    if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long tokenId))
                        throw Bad($"prompt_ids: item {i} is {element.GetRawText()}, not an integer token id.");
                    if (tokenId < 0 || tokenId >= model.Config.VocabSize)
                        throw Bad($"prompt_ids: token id {tokenId} at item {i} is outside the vocabulary [0, {model.Config.VocabSize}).");
                    ids[i++] = tokenId;
                }
            }
            if (!model.Config.Fits(ids.Length, maxTokens))
                throw Bad($"{(hasText ? "prompt" : "prompt_ids")}: {ids.Length} tokens + max_tokens {maxTokens} - 1 positions exceed {model.Config.Name}'s max sequence length {model.Config.MaxSeqLen}.");
            return new BatchPrompt(id, line, ids, maxTokens, hasText);
        }
    }

    private static string Kind(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => $"the number {element.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => element.GetRawText(),
        JsonValueKind.Null => "null",
        _ => element.ValueKind.ToString(),
    };
}
