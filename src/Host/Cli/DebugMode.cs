namespace FlexGen.Host.Cli;

using System.CommandLine;

/// <summary>FlexGen's --debug-mode of the benchmark (flex_opt.py).</summary>
public enum DebugMode
{
    None,

    /// <summary>Run the prefill and only <see cref="DebugModes.ExecuteNumBatches"/> decoding layer steps; project the decode latency.</summary>
    FewerBatch,

    /// <summary>As <see cref="FewerBatch"/>, without overlap, and print the time of each task kind per phase.</summary>
    Breakdown,
}

public static class DebugModes
{
    /// <summary>flex_opt.py's execute_num_batches: decoding layer steps (one layer of one token, all GPU batches) a debug run times.</summary>
    public const int ExecuteNumBatches = 20;

    public const string FewerBatchName = "fewer_batch";

    public const string BreakdownName = "breakdown";

    public static Option<string?> CreateOption() => new("--debug-mode")
    {
        Description = $"FlexGen's debug modes: {FewerBatchName} (run the prefill and {ExecuteNumBatches} decoding layer steps, project the decode latency) " +
                      $"or {BreakdownName} (the same without overlap, plus the time per task kind: load_weight, load_cache, compute_layer, ...).",
    };

    /// <summary>The mode a --debug-mode value names; anything else is a usage error listing the allowed values.</summary>
    public static DebugMode Parse(string? value) => value switch
    {
        null => DebugMode.None,
        FewerBatchName => DebugMode.FewerBatch,
        BreakdownName => DebugMode.Breakdown,
        _ => throw new UsageException($"--debug-mode {value}: must be {FewerBatchName} or {BreakdownName}."),
    };

    /// <summary>
    /// Tokens a debug run computes: the prefill plus the decoding tokens that hold <see cref="ExecuteNumBatches"/> layer steps
    /// of <paramref name="numLayers"/> layers each (FlexGen breaks inside the token that reaches them; we finish that token),
    /// never more than <paramref name="tokens"/>.
    /// </summary>
    public static int TokensToRun(int tokens, int numLayers) =>
        Math.Min(tokens, 1 + (ExecuteNumBatches + numLayers - 1) / numLayers);
}
