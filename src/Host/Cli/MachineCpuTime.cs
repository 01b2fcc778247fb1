namespace FlexGen.Host.Cli;

using System.Globalization;

/// <summary>
/// The whole machine's CPU time as <c>/proc/stat</c>'s first line counts it (all cores, in clock ticks): what a bench
/// phase had of the CPU. On a virtual machine the hypervisor runs other guests on the same cores, and the time it takes
/// from this one is <see cref="Steal"/>; on this project's 2-core VM it took 0-29% of the CPU over back-to-back runs
/// of the same binary, and decode throughput followed it (OPT-125m 8 x 4: 82-200 token/s), while the bounds assume
/// the whole CPU. A bench that says so lets its reader tell a slow engine from a busy host.
/// </summary>
/// <param name="Busy">user, nice, system, irq and softirq ticks: this machine's own work.</param>
/// <param name="Idle">idle and iowait ticks: no runnable thread on a core.</param>
/// <param name="Steal">ticks a core wanted to run and the hypervisor ran something else (0 on bare metal).</param>
public sealed record MachineCpuTime(long Busy, long Idle, long Steal)
{
    private const string PathName = "/proc/stat";

    /// <summary>All ticks counted: busy, idle and stolen.</summary>
    public long Total => Busy + Idle + Steal;

    /// <summary>The ticks from <paramref name="start"/> to <paramref name="end"/>.</summary>
    public static MachineCpuTime operator -(MachineCpuTime end, MachineCpuTime start) =>
        new(end.Busy - start.Busy, end.Idle - start.Idle, end.Steal - start.Steal);

    /// <summary>This machine's counters now, or null where there is no <c>/proc/stat</c> (not Linux) or it cannot be read.</summary>
    public static MachineCpuTime? Read() => Tensors.KernelFile.Read(PathName) is { } text ? Parse(text) : null;

    /// <summary>
    /// The counters of <c>/proc/stat</c>'s aggregate line (<c>cpu  user nice system idle iowait irq softirq steal ...</c>);
    /// null when the text has no such line or its fields are not counters. Kernels before 2.6.11 have no steal field (0).
    /// </summary>
    public static MachineCpuTime? Parse(string procStat)
    {
        ArgumentNullException.ThrowIfNull(procStat);
        var line = procStat.Split('\n').FirstOrDefault(l => l.StartsWith("cpu ", StringComparison.Ordinal));
        if (line is null) return null;
        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray();
        if (fields.Length < 4) return null;
        var ticks = new long[8];
        for (int i = 0; i < Math.Min(fields.Length, ticks.Length); i++)
        {
            if (!long.TryParse(fields[i], NumberStyles.None, CultureInfo.InvariantCulture, out ticks[i])) return null;
        }

        return new MachineCpuTime(
            Busy: ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6],
            Idle: ticks[3] + ticks[4],
            Steal: ticks[7]);
    }

    /// <summary>"busy 78%, idle 8%, stolen by the hypervisor 14%" of <see cref="Total"/>; null when no tick was counted.</summary>
    public string? Describe() =>
        Total <= 0
            ? null
            : string.Create(CultureInfo.InvariantCulture,
                $"busy {100.0 * Busy / Total:F0}%, idle {100.0 * Idle / Total:F0}%, stolen by the hypervisor {100.0 * Steal / Total:F0}%");
}

/// <summary>
/// Takes <see cref="MachineCpuTime"/> at a run's start, when its first token is done (the prefill's end) and at its
/// end, passing every report on to <paramref name="inner"/>. For bench's one block: with several blocks their
/// prefills and decodes interleave and the split would mean nothing.
/// </summary>
public sealed class PhaseCpuTime(IProgress<Actors.Messages.GenerationProgress> inner) : IProgress<Actors.Messages.GenerationProgress>
{
    private readonly MachineCpuTime? _start = MachineCpuTime.Read();
    private MachineCpuTime? _prefillDone;
    private MachineCpuTime? _end;

    public void Report(Actors.Messages.GenerationProgress value)
    {
        if (value.Token >= 1 && _prefillDone is null) _prefillDone = MachineCpuTime.Read();
        inner.Report(value);
    }

    /// <summary>Marks the run's end.</summary>
    public void Complete() => _end ??= MachineCpuTime.Read();

    /// <summary>
    /// "machine CPU (/proc/stat, all cores; ...): prefill busy ..; decode busy .." with a line break (a phase shorter than
    /// the kernel's clock tick, 10 ms, counts none), or "" where the counters could not be read or the run ended before
    /// its first token.
    /// </summary>
    public string Describe()
    {
        if (_start is null || _prefillDone is null || _end is null) return "";
        string Phase(string name, MachineCpuTime ticks) => $"{name} {ticks.Describe() ?? "under one clock tick"}";
        return $"machine CPU (/proc/stat, all cores; the bounds assume the whole CPU): {Phase("prefill", _prefillDone - _start)}; " +
               $"{Phase("decode", _end - _prefillDone)}\n";
    }
}
