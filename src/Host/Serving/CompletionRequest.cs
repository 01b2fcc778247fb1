namespace FlexGen.Host.Serving;

using System.Text.Json;
using FlexGen.Host.Text;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;

/// <summary>
/// A checked <c>POST /v1/completions</c> body (OpenAI's fields): every problem is an <see cref="ApiError"/> naming the
/// field (400), a model that is not the served one (404) or a prompt longer than the model allows (413).
/// </summary>
public sealed record CompletionRequest(
    IReadOnlyList<IReadOnlyList<long>> Prompts,
    bool TextPrompts,
    int MaxTokens,
    double Temperature,
    double? TopP,
    int? TopK,
    ulong? Seed,
    IReadOnlyList<string> Stop,
    bool Stream,
    bool IncludeUsage)
{
    public const int DefaultMaxTokens = 16;

    /// <summary>The engine's settings: greedy at temperature 0 (whatever top_p, top_k and seed say), else sampled.</summary>
    public GenerationSettings Settings(ModelConfig model) => new(MaxTokens)
    {
        Sampling = Temperature == 0 ? SamplingOptions.Greedy : new SamplingOptions(true, Temperature, Seed, TopK, TopP),
        // Text prompts of a family that ends its text with EOS stop there, as generate's --prompt does.
        StopTokenId = TextPrompts && model.Family.Tokenizer(model).StopAtEos ? model.EosTokenId : null,
    };

    public static CompletionRequest Parse(JsonElement body, ModelConfig model, IReadOnlyCollection<string> modelIds, BpeTokenizer? tokenizer)
    {
        if (body.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest(null, "The body must be a JSON object.", "invalid_json");

        if (Field(body, "model") is { } m)
        {
            if (m.ValueKind != JsonValueKind.String) throw ApiError.BadRequest("model", "'model' must be a string.", "invalid_type");
            string name = m.GetString()!;
            if (!modelIds.Contains(name))
                throw new ApiError(404, $"The model '{name}' does not exist; this server serves '{modelIds.First()}'.", "invalid_request_error", "model", "model_not_found");
        }

        int maxTokens = Field(body, "max_tokens") is { } mt ? Int(mt, "max_tokens") : DefaultMaxTokens;
        if (maxTokens < 1) throw ApiError.BadRequest("max_tokens", $"'max_tokens' is {maxTokens}; it must be >= 1.");

        double temperature = Field(body, "temperature") is { } t ? Number(t, "temperature") : 1.0;
        if (!double.IsFinite(temperature) || temperature < 0) throw ApiError.BadRequest("temperature", $"'temperature' is {temperature}; it must be >= 0 (0: greedy).");

        double? topP = Field(body, "top_p") is { } tp ? Number(tp, "top_p") : null;
        if (topP is { } p && !(p > 0 && p <= 1)) throw ApiError.BadRequest("top_p", $"'top_p' is {p}; it must be in (0, 1].");

        int? topK = Field(body, "top_k") is { } tk ? Int(tk, "top_k") : null;
        // -1 and 0 mean no limit (the convention of OpenAI-compatible servers).
        if (topK is < -1) throw ApiError.BadRequest("top_k", $"'top_k' is {topK}; it must be >= 1 (-1 or 0: no limit).");
        if (topK is -1 or 0) topK = null;

        ulong? seed = null;
        if (Field(body, "seed") is { } s)
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out long value)) throw ApiError.BadRequest("seed", "'seed' must be an integer.", "invalid_type");
            if (value < 0) throw ApiError.BadRequest("seed", $"'seed' is {value}; it must be >= 0.");
            seed = (ulong)value;
        }

        bool stream = Field(body, "stream") is { } st && Bool(st, "stream");
        bool includeUsage = false;
        if (Field(body, "stream_options") is { } so)
        {
            if (so.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest("stream_options", "'stream_options' must be an object.", "invalid_type");
            includeUsage = Field(so, "include_usage") is { } iu && Bool(iu, "stream_options.include_usage");
        }

        if (Field(body, "n") is { } n && Int(n, "n") != 1) throw ApiError.BadRequest("n", "Only n = 1 is supported.");

        var stop = new List<string>();
        if (Field(body, "stop") is { } stopField)
        {
            if (stopField.ValueKind == JsonValueKind.String) stop.Add(stopField.GetString()!);
            else if (stopField.ValueKind == JsonValueKind.Array && stopField.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
                stop.AddRange(stopField.EnumerateArray().Select(e => e.GetString()!));
            else throw ApiError.BadRequest("stop", "'stop' must be a string or an array of strings.", "invalid_type");
            if (stop.Any(string.IsNullOrEmpty)) throw ApiError.BadRequest("stop", "A stop string must not be empty.");
            if (stop.Count > 0 && tokenizer is null)
                throw ApiError.BadRequest("stop", $"Stop strings need a tokenizer; {model.Name} has none (send token ids and cut them yourself).");
        }

        if (Field(body, "prompt") is not { } prompt) throw ApiError.BadRequest("prompt", "'prompt' is required.", "missing_required_parameter");
        var (prompts, text) = ReadPrompts(prompt, model, tokenizer);

        for (int i = 0; i < prompts.Count; i++)
        {
            if (!model.Fits(prompts[i].Count, maxTokens))
                throw new ApiError(413,
                    $"Prompt {i} has {prompts[i].Count} tokens; with max_tokens {maxTokens} that is {prompts[i].Count + maxTokens - 1} positions, " +
                    $"more than {model.Name}'s maximum context length of {model.MaxSeqLen}.", "invalid_request_error", "prompt", "context_length_exceeded");
        }

        return new CompletionRequest(prompts, text, maxTokens, temperature, topP, topK, seed, stop, stream, includeUsage);
    }

    /// <summary>A string, an array of strings, an array of token ids, or an array of token-id arrays.</summary>
    private static (IReadOnlyList<IReadOnlyList<long>> Prompts, bool Text) ReadPrompts(JsonElement prompt, ModelConfig model, BpeTokenizer? tokenizer)
    {
        IReadOnlyList<long> Encode(string text)
        {
            if (tokenizer is null)
                throw ApiError.BadRequest("prompt", $"Text prompts need a tokenizer; {model.Name} has none: send token ids (an array of integers, or of arrays).");
            if (text.Length == 0) throw ApiError.BadRequest("prompt", "A text prompt must not be empty.");
            return tokenizer.Encode(text).Select(i => (long)i).ToArray();
        }

        IReadOnlyList<long> Ids(JsonElement array, string where)
        {
            var ids = new List<long>();
            foreach (var e in array.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long id))
                    throw ApiError.BadRequest("prompt", $"{where} must hold integer token ids.", "invalid_type");
                if (id < 0 || id >= model.VocabSize)
                    throw ApiError.BadRequest("prompt", $"{where} has token id {id} at position {ids.Count}, outside [0, {model.VocabSize}) of {model.Name}.");
                ids.Add(id);
            }
            if (ids.Count == 0) throw ApiError.BadRequest("prompt", $"{where} has no tokens.");
            return ids;
        }

        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return ([Encode(prompt.GetString()!)], true);
            case JsonValueKind.Array:
                var items = prompt.EnumerateArray().ToList();
                if (items.Count == 0) throw ApiError.BadRequest("prompt", "'prompt' is an empty array.");
                if (items.All(e => e.ValueKind == JsonValueKind.String)) return (items.Select(e => Encode(e.GetString()!)).ToList(), true);
                if (items.All(e => e.ValueKind == JsonValueKind.Number)) return ([Ids(prompt, "'prompt'")], false);
                if (items.All(e => e.ValueKind == JsonValueKind.Array)) return (items.Select((e, i) => Ids(e, $"'prompt[{i}]'")).ToList(), false);
                break;
        }
        throw ApiError.BadRequest("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an array of token-id arrays.", "invalid_type");
    }

    /// <summary>The field, or null when absent or JSON null (the default then applies).</summary>
    private static JsonElement? Field(JsonElement body, string name) =>
        body.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private static int Int(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v) ? v : throw ApiError.BadRequest(name, $"'{name}' must be an integer.", "invalid_type");

    private static double Number(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Number ? e.GetDouble() : throw ApiError.BadRequest(name, $"'{name}' must be a number.", "invalid_type");

    private static bool Bool(JsonElement e, string name) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw ApiError.BadRequest(name, $"'{name}' must be true or false.", "invalid_type"),
    };
}
