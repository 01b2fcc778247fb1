namespace FlexGen.Host.Generation;

/// <summary>Timing and memory of one engine run.</summary>
/// <param name="Sequences">Sequences generated (rows of the request, padding rows not counted).</param>
/// <param name="PromptLen">Prompt length (after left-padding).</param>
/// <param name="GenLen">New tokens per sequence that were computed.</param>
/// <param name="Prefill">Time to the first generated token.</param>
/// <param name="Decode">Time of the remaining tokens.</param>
/// <param name="PeakBytesByTier">Peak bytes held per tier ("gpu", "cpu", "disk"), as the engine accounted them.</param>
public sealed record RunStatistics(
    int Sequences,
    int PromptLen,
    int GenLen,
    TimeSpan Prefill,
    TimeSpan Decode,
    IReadOnlyDictionary<string, long> PeakBytesByTier)
{
    public TimeSpan Total => Prefill + Decode;

    /// <summary>Prompt tokens processed per second during prefill (FlexGen's prefill throughput).</summary>
    public double PrefillThroughput => Prefill.TotalSeconds > 0 ? Sequences * (double)PromptLen / Prefill.TotalSeconds : 0;

    /// <summary>Generated tokens per second after the first (FlexGen's decode throughput).</summary>
    public double DecodeThroughput => Decode.TotalSeconds > 0 ? Sequences * (double)(GenLen - 1) / Decode.TotalSeconds : 0;

    /// <summary>Generated tokens per second over the whole run (FlexGen's total throughput).</summary>
    public double TotalThroughput => Total.TotalSeconds > 0 ? Sequences * (double)GenLen / Total.TotalSeconds : 0;
}

/// <summary>The timeline of a run: every task of every tier.</summary>
public interface IRunTimeline
{
    /// <summary>Writes Chrome trace-event JSON (opens in Perfetto or chrome://tracing).</summary>
    void WriteChromeJson(string path);

    /// <summary>A few lines: per-tier busy time, overlap, idle gaps.</summary>
    string Summary { get; }

    /// <summary>One line per task kind and phase: parts run, total and mean time (FlexGen's debug_mode breakdown).</summary>
    string Breakdown { get; }

    /// <summary>Bytes each tier actor moved or computed on ("disk-io", "copy", "gpu-compute", "cpu-compute"), as traced.</summary>
    IReadOnlyDictionary<string, long> BytesByTier { get; }

    /// <summary>What each tier actor did during one phase: prefill (token 0) or decoding (tokens 1..).</summary>
    IReadOnlyList<TierActivity> ActivityDuring(bool prefill);
}

/// <summary>What one tier actor did during one phase of a run, as traced.</summary>
/// <param name="Tier">The actor: "disk-io", "copy", "gpu-compute" or "cpu-compute".</param>
/// <param name="LoadedBytes">Bytes its loads brought in (a compute actor: the weights and cache it consumed).</param>
/// <param name="StoredBytes">Bytes its stores wrote out (cache and hidden states).</param>
/// <param name="Busy">The time it was executing something (the union of its tasks' intervals).</param>
public sealed record TierActivity(string Tier, int Tasks, long LoadedBytes, long StoredBytes, TimeSpan Busy)
{
    /// <summary>Bytes moved per second of busy time (0 when never busy).</summary>
    public double BytesPerSecond => Busy > TimeSpan.Zero ? (LoadedBytes + StoredBytes) / Busy.TotalSeconds : 0;
}
