namespace FlexGen.Actors.Tracing;

using System.Collections.Immutable;
using FlexGen.Actors.Schedule;

/// <summary>The timeline of one run: every task part each tier executed, ordered by start. Immutable data.</summary>
public sealed record ExecutionTrace(ImmutableArray<TraceEvent> Events)
{
    public static ExecutionTrace Empty { get; } = new(ImmutableArray<TraceEvent>.Empty);

    /// <summary>The events of one tier in the order it ran them.</summary>
    public IReadOnlyList<TraceEvent> EventsOf(PipelineActorKind tier) => Events.Where(e => e.Tier == tier).ToArray();

    /// <summary>The nodes the events ran on, in order of first appearance (one null entry for a one-node trace).</summary>
    public IReadOnlyList<string?> Nodes => Events.Select(e => e.Node).Distinct().ToArray();

    /// <summary>
    /// One trace of the traces several nodes recorded: each node's events labelled with its name and moved onto
    /// <paramref name="originUtc"/>'s time line by the difference of the nodes' wall clocks.
    /// </summary>
    public static ExecutionTrace Merge(DateTime originUtc, IEnumerable<(string Node, DateTime OriginUtc, IEnumerable<TraceEvent> Events)> nodes) =>
        new([.. nodes.SelectMany(n => n.Events.Select(e => e with
            {
                Node = n.Node,
                Start = e.Start + (n.OriginUtc - originUtc),
                End = e.End + (n.OriginUtc - originUtc),
            }))
            .OrderBy(e => e.Start).ThenBy(e => e.Tier)]);

    public TraceSummary Summarize() => TraceSummary.From(this);

    /// <summary>The events of one phase: token 0 (prefill) or tokens 1.. (decoding).</summary>
    public ExecutionTrace OfPhase(bool prefill) => new([.. Events.Where(e => (e.Task.Token == 0) == prefill)]);

    /// <summary>Time per task kind and phase (FlexGen's debug_mode "breakdown").</summary>
    public TaskBreakdown Breakdown() => TaskBreakdown.From(this);

    /// <summary>Writes the trace as Chrome trace-event JSON (opens in Perfetto and chrome://tracing).</summary>
    public void WriteChromeJson(Stream stream) => ChromeTraceWriter.Write(this, stream);

    public void WriteChromeJson(string path)
    {
        using var file = File.Create(path);
        WriteChromeJson(file);
    }
}
