using System.Text.Json;

namespace FlexGen.Tensors.Policies;

/// <summary>A policy JSON file that cannot be read: names the file, the policy and the key.</summary>
public sealed class PolicyJsonException : FormatException
{
    public PolicyJsonException(string source, string? policyName, string? key, string problem, Exception? inner = null)
        : base(Describe(source, policyName, key, problem), inner)
    {
        Source = source;
        PolicyName = policyName;
        Key = key;
    }

    /// <summary>The file (or other source) read.</summary>
    public new string Source { get; }

    public string? PolicyName { get; }

    public string? Key { get; }

    private static string Describe(string source, string? policyName, string? key, string problem) =>
        $"{source}" + (policyName is null ? "" : $": policy '{policyName}'") + (key is null ? "" : $", key '{key}'") +
        $": {problem}";
}

/// <summary>
/// Reads FlexGen policies written as JSON (the bundled fixture model's policies.json): an object of named policies,
/// each with FlexGen's field names (<c>gpu_batch_size</c>, <c>num_gpu_batches</c>, the six-number <c>percent</c>,
/// <c>overlap</c>, <c>sep_layer</c>, <c>pin_weight</c>, <c>cpu_cache_compute</c>, <c>attn_sparsity</c>,
/// <c>compress_weight</c>, <c>comp_weight_config</c>, <c>compress_cache</c>, <c>comp_cache_config</c>).
/// Missing optional keys take FlexGen's CLI defaults; keys starting with <c>flexllmgen_</c> are annotations and are
/// skipped; any other unknown key is refused (a typo must not silently fall back to a default).
/// </summary>
public static class FlexGenPolicyJson
{
    private const string AnnotationPrefix = "flexllmgen_";

    /// <summary>All policies of the file, in file order.</summary>
    public static IReadOnlyDictionary<string, Policy> Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string json;
        try
        {
            json = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolicyJsonException(path, null, null, $"cannot read the file ({e.Message})", e);
        }
        return Parse(json, path);
    }

    /// <summary>All policies of a JSON text, in order; <paramref name="source"/> names it in errors.</summary>
    public static IReadOnlyDictionary<string, Policy> Parse(string json, string source = "<json>")
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new PolicyJsonException(source, null, null, $"not valid JSON ({e.Message})", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new PolicyJsonException(source, null, null,
                    $"the top level must be an object of named policies, not {root.ValueKind}");
            var policies = new OrderedDictionary<string, Policy>(StringComparer.Ordinal);
            foreach (var entry in root.EnumerateObject())
            {
                if (policies.ContainsKey(entry.Name))
                    throw new PolicyJsonException(source, entry.Name, null, "the policy name appears twice");
                policies.Add(entry.Name, ParsePolicy(entry.Value, source, entry.Name));
            }
            return policies;
        }
    }

    /// <summary>One policy object (FlexGen field names).</summary>
    public static Policy ParsePolicy(JsonElement element, string source, string policyName)
    {
        var reader = new ObjectReader(element, source, policyName, null);
        var percent = reader.RequiredPercent("percent");
        try
        {
            var policy = Policy.FromPercent(percent, reader.RequiredInt("gpu_batch_size"),
                reader.RequiredInt("num_gpu_batches")) with
            {
                Overlap = reader.OptionalBool("overlap", true),
                SepLayer = reader.OptionalBool("sep_layer", true),
                PinWeight = reader.OptionalBool("pin_weight", true),
                CpuCacheCompute = reader.OptionalBool("cpu_cache_compute", false),
                AttnSparsity = reader.OptionalDouble("attn_sparsity", 1.0),
                CompressWeight = reader.OptionalBool("compress_weight", false),
                CompWeightConfig = reader.OptionalCompression("comp_weight_config", CompressionConfig.DefaultWeight),
                CompressCache = reader.OptionalBool("compress_cache", false),
                CompCacheConfig = reader.OptionalCompression("comp_cache_config", CompressionConfig.DefaultCache),
            };
            reader.RefuseUnknownKeys(key => key.StartsWith(AnnotationPrefix, StringComparison.Ordinal));
            return policy;
        }
        catch (PolicyValidationException e)
        {
            throw new PolicyJsonException(source, policyName, null, e.Message, e);
        }
    }

    private sealed class ObjectReader
    {
        private readonly JsonElement _element;
        private readonly string _source;
        private readonly string _policyName;
        private readonly string? _prefix;
        private readonly HashSet<string> _read = new(StringComparer.Ordinal);

        public ObjectReader(JsonElement element, string source, string policyName, string? prefix)
        {
            _source = source;
            _policyName = policyName;
            _prefix = prefix;
            if (element.ValueKind != JsonValueKind.Object)
                throw Error(null, $"must be an object, not {element.ValueKind}");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in element.EnumerateObject())
                if (!seen.Add(p.Name))
                    throw Error(p.Name, "the key appears twice");
            _element = element;
        }

        public int RequiredInt(string key) => ReadInt(key, Required(key));

        public double[] RequiredPercent(string key)
        {
            var value = Required(key);
            if (value.ValueKind != JsonValueKind.Array)
                throw Error(key, $"must be an array of six numbers, not {value.ValueKind}");
            var numbers = value.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.Number
                ? v.GetDouble()
                : throw Error(key, $"must hold numbers only, found {v.ValueKind}")).ToArray();
            if (numbers.Length != 6)
                throw Error(key, $"must hold six numbers (w_gpu w_cpu cache_gpu cache_cpu act_gpu act_cpu), found {numbers.Length}");
            return numbers;
        }

        public bool OptionalBool(string key, bool fallback)
        {
            if (!TryGet(key, out var value)) return fallback;
            return value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Error(key, $"must be true or false, not {value.ValueKind} {value.GetRawText()}"),
            };
        }

        public double OptionalDouble(string key, double fallback)
        {
            if (!TryGet(key, out var value)) return fallback;
            return value.ValueKind == JsonValueKind.Number
                ? value.GetDouble()
                : throw Error(key, $"must be a number, not {value.ValueKind} {value.GetRawText()}");
        }

        public CompressionConfig OptionalCompression(string key, CompressionConfig fallback)
        {
            if (!TryGet(key, out var value)) return fallback;
            var inner = new ObjectReader(value, _source, _policyName, Qualify(key));
            var (numBits, groupSize, groupDim) =
                (inner.RequiredInt("num_bits"), inner.RequiredInt("group_size"), inner.RequiredInt("group_dim"));
            var (symmetric, enabled) = (inner.OptionalBool("symmetric", false), inner.OptionalBool("enabled", true));
            inner.RefuseUnknownKeys(_ => false);
            try
            {
                return new CompressionConfig(numBits, groupSize, groupDim, symmetric, enabled);
            }
            catch (PolicyValidationException e)
            {
                throw new PolicyJsonException(_source, _policyName, Qualify(key), e.Message, e);
            }
        }

        public void RefuseUnknownKeys(Func<string, bool> ignored)
        {
            foreach (var p in _element.EnumerateObject())
                if (!_read.Contains(p.Name) && !ignored(p.Name))
                    throw Error(p.Name, "unknown key (a FlexGen policy field name was expected)");
        }

        private int ReadInt(string key, JsonElement value) =>
            value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var n)
                ? n
                : throw Error(key, $"must be an integer, not {value.ValueKind} {value.GetRawText()}");

        private JsonElement Required(string key) =>
            TryGet(key, out var value) ? value : throw Error(key, "required key is missing");

        private bool TryGet(string key, out JsonElement value)
        {
            _read.Add(key);
            return _element.TryGetProperty(key, out value);
        }

        private string? Qualify(string? key) => key is null ? _prefix : _prefix is null ? key : $"{_prefix}.{key}";

        private PolicyJsonException Error(string? key, string problem) =>
            new(_source, _policyName, Qualify(key), problem);
    }
}
