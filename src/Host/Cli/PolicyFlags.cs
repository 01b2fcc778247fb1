namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Host.Hosting;

/// <summary>FlexGen's policy flags (names and defaults of flex_opt.py), shared by generate and bench.</summary>
public sealed class PolicyFlags
{
    public Option<int> GpuBatchSize { get; } = new("--gpu-batch-size")
    {
        Description = "Sequences per GPU batch.",
        DefaultValueFactory = _ => 4,
    };

    public Option<int> NumGpuBatches { get; } = new("--num-gpu-batches")
    {
        Description = "GPU batches per block (the block is gpu-batch-size x num-gpu-batches sequences).",
        DefaultValueFactory = _ => 1,
    };

    public Option<double[]> Percent { get; } = new("--percent")
    {
        Description = "Six numbers: weights GPU% CPU%, KV cache GPU% CPU%, activations GPU% CPU% (the rest goes to disk).",
        AllowMultipleArgumentsPerToken = true,
        Arity = ArgumentArity.OneOrMore,
        DefaultValueFactory = _ => [100, 0, 100, 0, 100, 0],
    };

    public Option<string> SepLayer { get; } = Bool("--sep-layer", true, "Run attention and MLP as two layers.");

    public Option<string> PinWeight { get; } = Bool("--pin-weight", true, "Pin CPU-resident weights (with CUDA).");

    public Option<string> CpuCacheCompute { get; } = Bool("--cpu-cache-compute", false, "Compute decode attention on the CPU over CPU-resident cache.");

    public Option<double> AttnSparsity { get; } = new("--attn-sparsity")
    {
        Description = "Fraction of attention kept (top-k over the cache); 1 = dense.",
        DefaultValueFactory = _ => 1.0,
    };

    public Option<string> CompressWeight { get; } = Bool("--compress-weight", false, "4-bit group-quantize weights.");

    public Option<string> CompressCache { get; } = Bool("--compress-cache", false, "4-bit group-quantize the KV cache.");

    public Option<string> Overlap { get; } = Bool("--overlap", true, "Overlap transfers with compute.");

    public Option<string?> OffloadDir { get; } = new("--offload-dir")
    {
        Description = "Folder for disk-tier tensors (default: a new folder under the system temp folder, deleted at exit).",
    };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[]
                 {
                     GpuBatchSize, NumGpuBatches, Percent, SepLayer, PinWeight, CpuCacheCompute, AttnSparsity,
                     CompressWeight, CompressCache, Overlap, OffloadDir,
                 })
            command.Options.Add(option);
    }

    /// <summary>The policy options the flags set (unchecked: <see cref="PolicyOptions.ToPolicy"/> checks them).</summary>
    public PolicyOptions ToOptions(ParseResult parse)
    {
        double[] percent = parse.GetValue(Percent) ?? [];
        // A count the flag's arity cannot express; the values themselves are the policy's to check.
        if (percent.Length != 6)
            throw new UsageException(
                $"--percent needs six numbers (weights GPU CPU, cache GPU CPU, activations GPU CPU), got {percent.Length}: {string.Join(' ', percent)}.");
        return new PolicyOptions
        {
            GpuBatchSize = parse.GetValue(GpuBatchSize),
            NumGpuBatches = parse.GetValue(NumGpuBatches),
            Percent = percent,
            Overlap = GetBool(parse, Overlap),
            SepLayer = GetBool(parse, SepLayer),
            PinWeight = GetBool(parse, PinWeight),
            CpuCacheCompute = GetBool(parse, CpuCacheCompute),
            AttnSparsity = parse.GetValue(AttnSparsity),
            CompressWeight = GetBool(parse, CompressWeight),
            CompressCache = GetBool(parse, CompressCache),
        };
    }

    /// <summary>
    /// A FlexGen boolean flag: bare means true; a value is read as FlexGen's str2bool reads it (true/false, yes/no,
    /// t/f, y/n, 1/0). A string option underneath, because System.CommandLine's bool options only take true/false.
    /// </summary>
    public static Option<string> Bool(string name, bool defaultValue, string description) => new(name)
    {
        // The help shows <true|false> and [default: ...] itself.
        Description = $"{description.TrimEnd('.')} (also yes/no, 1/0; bare: true).",
        HelpName = "true|false",
        // Given without a value (the option present, no token): true; absent: the default.
        DefaultValueFactory = r => r.Parent is System.CommandLine.Parsing.OptionResult { Implicit: false } || defaultValue ? "true" : "false",
        Arity = ArgumentArity.ZeroOrOne,
        CustomParser = result =>
        {
            if (result.Tokens.Count == 0) return "true";
            string text = result.Tokens[0].Value;
            if (ParseBool(text) is { } value) return value ? "true" : "false";
            result.AddError($"{name} {text}: expected a boolean (true/false, yes/no, 1/0).");
            return defaultValue ? "true" : "false";
        },
    };

    /// <summary>The value of a flag made by <see cref="Bool"/>.</summary>
    public static bool GetBool(ParseResult parse, Option<string> flag) => ParseBool(parse.GetValue(flag) ?? "") ?? false;

    private static bool? ParseBool(string text) => text.ToLowerInvariant() switch
    {
        "true" or "t" or "yes" or "y" or "1" => true,
        "false" or "f" or "no" or "n" or "0" => false,
        _ => null,
    };
}
