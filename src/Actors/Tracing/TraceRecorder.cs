namespace FlexGen.Actors.Tracing;

using System.Collections.Immutable;
using System.Diagnostics;
using FlexGen.Actors.Schedule;

/// <summary>
/// Collects <see cref="TraceEvent"/>s from all tier actors of one run (thread-safe: each tier actor
/// records from its own thread). Times are offsets from the moment the recorder was created.
/// </summary>
public sealed class TraceRecorder
{
    private readonly object _gate = new();
    private readonly List<TraceEvent> _events = new();
    private readonly long _origin = Stopwatch.GetTimestamp();

    /// <summary>The wall-clock moment the times count from (to line up the traces of several nodes).</summary>
    public DateTime OriginUtc { get; } = DateTime.UtcNow;

    /// <summary>Offset of "now" from the recorder's origin.</summary>
    public TimeSpan Now => Stopwatch.GetElapsedTime(_origin);

    public void Record(PipelineActorKind tier, BlockTask task, TimeSpan start, TimeSpan end, long bytes)
    {
        var e = new TraceEvent(tier, task, start, end, bytes);
        lock (_gate)
        {
            _events.Add(e);
        }
    }

    /// <summary>A snapshot of the events so far, ordered by start time.</summary>
    public ExecutionTrace ToTrace()
    {
        lock (_gate)
        {
            return new ExecutionTrace(_events.OrderBy(e => e.Start).ThenBy(e => e.Tier).ToImmutableArray());
        }
    }
}
