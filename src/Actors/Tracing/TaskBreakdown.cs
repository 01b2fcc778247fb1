namespace FlexGen.Actors.Tracing;

using System.Globalization;
using FlexGen.Actors.Schedule;

/// <summary>Time spent in one kind of task during one phase: how many task parts ran and their summed duration.</summary>
/// <param name="Prefill">Token 0 (prefill) or tokens 1.. (decoding).</param>
public sealed record TaskKindTiming(TaskKind Kind, bool Prefill, int Parts, TimeSpan Total)
{
    public TimeSpan Mean => Parts == 0 ? TimeSpan.Zero : Total / Parts;

    /// <summary>FlexGen's name of the step (FlexGen's model methods): load_weight, compute_layer, ...</summary>
    public string Name => KindName(Kind);

    public static string KindName(TaskKind kind) => kind switch
    {
        TaskKind.LoadWeight => "load_weight",
        TaskKind.LoadCache => "load_cache",
        TaskKind.LoadHidden => "load_hidden",
        TaskKind.ComputeLayer => "compute_layer",
        TaskKind.StoreCache => "store_cache",
        TaskKind.StoreHidden => "store_hidden",
        _ => kind.ToString(),
    };
}

/// <summary>
/// FlexGen's execution-time breakdown (debug_mode "breakdown") from a trace: per task kind and phase (prefill,
/// decoding), the task parts run and their total and mean time. Parts of one task that run on several tiers
/// count separately.
/// </summary>
public sealed record TaskBreakdown(IReadOnlyList<TaskKindTiming> Rows)
{
    public TaskKindTiming Of(TaskKind kind, bool prefill) => Rows.Single(r => r.Kind == kind && r.Prefill == prefill);

    public static TaskBreakdown From(ExecutionTrace trace)
    {
        var rows = new List<TaskKindTiming>();
        foreach (bool prefill in new[] { true, false })
        {
            var phase = trace.OfPhase(prefill);
            foreach (var kind in Enum.GetValues<TaskKind>())
            {
                var parts = phase.Events.Where(e => e.Task.Kind == kind).ToArray();
                rows.Add(new TaskKindTiming(kind, prefill, parts.Length, TimeSpan.FromTicks(parts.Sum(e => e.Duration.Ticks))));
            }
        }

        return new TaskBreakdown(rows);
    }

    /// <summary>One line per task kind and phase: parts, total ms, mean ms per part.</summary>
    public void WriteTo(TextWriter writer)
    {
        var c = CultureInfo.InvariantCulture;
        writer.WriteLine(string.Format(c, "  {0,-24} {1,7} {2,12} {3,12}", "task (phase)", "parts", "total ms", "mean ms"));
        foreach (var row in Rows)
        {
            writer.WriteLine(string.Format(c, "  {0,-24} {1,7} {2,12:F3} {3,12:F4}",
                $"{row.Name} ({(row.Prefill ? "prefill" : "decoding")})", row.Parts, row.Total.TotalMilliseconds, row.Mean.TotalMilliseconds));
        }
    }

    public override string ToString()
    {
        using var w = new StringWriter(CultureInfo.InvariantCulture);
        WriteTo(w);
        return w.ToString();
    }
}
