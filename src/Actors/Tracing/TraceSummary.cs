namespace FlexGen.Actors.Tracing;

using System.Globalization;
using FlexGen.Actors.Schedule;

/// <summary>What one tier did over a run.</summary>
/// <param name="Busy">Time the tier was executing something (union of its task intervals).</param>
/// <param name="Idle">Wall time minus <paramref name="Busy"/>.</param>
/// <param name="IdleGaps">Gaps between consecutive busy intervals (not counting before its first or after its last task).</param>
/// <param name="LongestGap">The longest of those gaps.</param>
public sealed record TierSummary(PipelineActorKind Tier, int Tasks, long Bytes, TimeSpan Busy, TimeSpan Idle, int IdleGaps, TimeSpan LongestGap);

/// <summary>
/// A trace boiled down: wall time, per-tier busy time, the time during which I/O (copy, disk) and compute
/// (GPU, CPU) overlapped, and the schedule efficiency = wall time / the busiest tier's busy time
/// (1.0 = the busiest tier never waited; without overlap it approaches the sum of all tiers' times
/// divided by the largest).
/// </summary>
public sealed record TraceSummary(TimeSpan Wall, IReadOnlyList<TierSummary> Tiers, TimeSpan IoComputeOverlap, double ScheduleEfficiency)
{
    public TierSummary? Of(PipelineActorKind tier) => Tiers.FirstOrDefault(t => t.Tier == tier);

    public TierSummary Busiest => Tiers.OrderByDescending(t => t.Busy).First();

    public static TraceSummary From(ExecutionTrace trace)
    {
        var events = trace.Events;
        if (events.Length == 0)
        {
            return new TraceSummary(TimeSpan.Zero, Array.Empty<TierSummary>(), TimeSpan.Zero, 1.0);
        }

        var origin = events.Min(e => e.Start);
        var wall = events.Max(e => e.End) - origin;
        var tiers = new List<TierSummary>();
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            var mine = events.Where(e => e.Tier == tier).ToArray();
            if (mine.Length == 0)
            {
                continue;
            }

            var busy = Union(mine.Select(e => (e.Start, e.End)));
            var total = TimeSpan.FromTicks(busy.Sum(b => (b.End - b.Start).Ticks));
            int gaps = 0;
            var longest = TimeSpan.Zero;
            for (int n = 1; n < busy.Count; n++)
            {
                var gap = busy[n].Start - busy[n - 1].End;
                if (gap > TimeSpan.Zero)
                {
                    gaps++;
                    longest = gap > longest ? gap : longest;
                }
            }

            tiers.Add(new TierSummary(tier, mine.Length, mine.Sum(e => e.Bytes), total, wall - total, gaps, longest));
        }

        var io = Union(events.Where(e => e.Tier.IsIo()).Select(e => (e.Start, e.End)));
        var compute = Union(events.Where(e => e.Tier.IsCompute()).Select(e => (e.Start, e.End)));
        return Of(wall, tiers, Intersection(io, compute));
    }

    /// <summary>
    /// Several traces (e.g. repeated requests) as one: walls, busy and idle times, tasks, bytes, gaps and overlap added per
    /// tier, the longest gap the longest of any, the efficiency of the sums.
    /// </summary>
    public static TraceSummary Sum(IEnumerable<TraceSummary> summaries)
    {
        var all = summaries.ToList();
        var wall = TimeSpan.FromTicks(all.Sum(s => s.Wall.Ticks));
        var tiers = all.SelectMany(s => s.Tiers).GroupBy(t => t.Tier).OrderBy(g => g.Key)
            .Select(g => new TierSummary(g.Key, g.Sum(t => t.Tasks), g.Sum(t => t.Bytes), TimeSpan.FromTicks(g.Sum(t => t.Busy.Ticks)),
                TimeSpan.FromTicks(g.Sum(t => t.Idle.Ticks)), g.Sum(t => t.IdleGaps), g.Max(t => t.LongestGap)))
            .ToList();
        return Of(wall, tiers, TimeSpan.FromTicks(all.Sum(s => s.IoComputeOverlap.Ticks)));
    }

    // The schedule efficiency: wall over the busiest tier's busy time (1 with nothing busy).
    private static TraceSummary Of(TimeSpan wall, List<TierSummary> tiers, TimeSpan overlap)
    {
        var busiest = tiers.Count > 0 ? tiers.Max(t => t.Busy) : TimeSpan.Zero;
        return new TraceSummary(wall, tiers, overlap, busiest > TimeSpan.Zero ? wall / busiest : 1.0);
    }

    /// <summary>A small fixed-width table: one line per tier, then overlap and efficiency.</summary>
    public void WriteTo(TextWriter writer)
    {
        var c = CultureInfo.InvariantCulture;
        writer.WriteLine(string.Format(c, "wall {0:F1} ms, I/O-compute overlap {1:F1} ms, schedule efficiency {2:F3} (wall / busiest tier busy)",
            Wall.TotalMilliseconds, IoComputeOverlap.TotalMilliseconds, ScheduleEfficiency));
        writer.WriteLine(string.Format(c, "  {0,-12} {1,7} {2,12} {3,11} {4,11} {5,6} {6,12}", "tier", "tasks", "MB", "busy ms", "idle ms", "gaps", "longest ms"));
        foreach (var t in Tiers)
        {
            writer.WriteLine(string.Format(c, "  {0,-12} {1,7} {2,12:F2} {3,11:F1} {4,11:F1} {5,6} {6,12:F2}",
                t.Tier.ActorName(), t.Tasks, t.Bytes / 1e6, t.Busy.TotalMilliseconds, t.Idle.TotalMilliseconds, t.IdleGaps, t.LongestGap.TotalMilliseconds));
        }
    }

    public override string ToString()
    {
        using var w = new StringWriter(CultureInfo.InvariantCulture);
        WriteTo(w);
        return w.ToString();
    }

    internal static List<(TimeSpan Start, TimeSpan End)> Union(IEnumerable<(TimeSpan Start, TimeSpan End)> intervals)
    {
        var merged = new List<(TimeSpan Start, TimeSpan End)>();
        foreach (var (start, end) in intervals.OrderBy(x => x.Start))
        {
            if (merged.Count > 0 && start <= merged[^1].End)
            {
                var last = merged[^1];
                merged[^1] = (last.Start, end > last.End ? end : last.End);
            }
            else
            {
                merged.Add((start, end));
            }
        }

        return merged;
    }

    internal static TimeSpan Intersection(IReadOnlyList<(TimeSpan Start, TimeSpan End)> a, IReadOnlyList<(TimeSpan Start, TimeSpan End)> b)
    {
        long ticks = 0;
        int x = 0, y = 0;
        while (x < a.Count && y < b.Count)
        {
            var start = a[x].Start > b[y].Start ? a[x].Start : b[y].Start;
            var end = a[x].End < b[y].End ? a[x].End : b[y].End;
            if (end > start)
            {
                ticks += (end - start).Ticks;
            }

            if (a[x].End < b[y].End)
            {
                x++;
            }
            else
            {
                y++;
            }
        }

        return TimeSpan.FromTicks(ticks);
    }
}
