namespace FlexGen.Host.Cli;

using System.Diagnostics;

/// <summary>
/// Progress of one long stage (weight loading, conversion, generation). On a terminal it redraws one line with a
/// bar; when output is redirected or captured it writes plain lines, at most one per tenth of the work.
/// </summary>
public sealed class ProgressReporter : IProgress<long>, IDisposable
{
    private readonly CliConsole _console;
    private readonly string _stage;
    private readonly long _total;
    private readonly string _unit;
    private readonly Func<long, string> _format;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Lock _lock = new();
    private long _done;
    private string? _detail;
    private int _lastTenth = -1;
    private long _lastDrawTicks;
    private bool _finished;
    private bool _lineOpen; // a bar is drawn on the terminal's current line

    /// <param name="format">Writes an amount (done or total) in <paramref name="unit"/>; default: the number itself.</param>
    /// <param name="announce">Whether plain output starts with a "started" line (off where the caller says it).</param>
    public ProgressReporter(CliConsole console, string stage, long total, string unit, Func<long, string>? format = null, bool announce = true)
    {
        _console = console;
        _stage = stage;
        _total = Math.Max(total, 0);
        _unit = unit;
        _format = format ?? (amount => amount.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (announce && !console.Interactive) console.Error.WriteLine($"{stage}: started ({Describe(0)})");
    }

    /// <summary>Sets the amount done so far (absolute, not an increment).</summary>
    public void Report(long done) => Report(done, null);

    /// <summary>Sets the amount done so far and a note on where the work is (e.g. "layer 3/8"), shown before it.</summary>
    public void Report(long done, string? detail)
    {
        lock (_lock)
        {
            if (_finished) return;
            _done = Math.Clamp(done, 0, _total == 0 ? done : _total);
            _detail = detail;
            if (_console.Interactive)
            {
                long now = _clock.ElapsedTicks;
                // The first report draws at once, then at most ten redraws a second (and the last one).
                if (_lineOpen && now - _lastDrawTicks < Stopwatch.Frequency / 10 && _done < _total) return;
                _lastDrawTicks = now;
                int width = 30;
                int filled = _total == 0 ? width : (int)(width * _done / _total);
                _console.Error.Write($"\r{_stage} [{new string('#', filled)}{new string('.', width - filled)}] {Describe(_done)}   ");
                _lineOpen = true;
            }
            else
            {
                int tenth = _total == 0 ? 10 : (int)(10 * _done / _total);
                if (tenth <= _lastTenth || tenth == 10) return;
                _lastTenth = tenth;
                if (tenth > 0) _console.Error.WriteLine($"{_stage}: {Describe(_done)}");
            }
        }
    }

    /// <summary>Marks the stage complete and prints its duration.</summary>
    public void Complete()
    {
        lock (_lock)
        {
            if (_finished) return;
            _finished = true;
            _done = _total;
            string line = $"{_stage}: done ({Describe(_done)}) in {_clock.Elapsed.TotalSeconds:F2} s";
            if (_console.Interactive) _console.Error.WriteLine($"\r{line}{new string(' ', 20)}");
            else _console.Error.WriteLine(line);
            _lineOpen = false;
        }
    }

    private string Describe(long done) =>
        (_detail is null ? "" : _detail + ", ") +
        (_total == 0 ? $"{_format(done)}{Suffix}" : $"{_format(done)}/{_format(_total)}{Suffix}, {100.0 * done / _total:F0}%");

    private string Suffix => _unit.Length == 0 ? "" : " " + _unit;

    /// <summary>
    /// Stops the display; an unfinished stage (failed or cancelled) ends the bar's line so that what is written next
    /// (the <c>failed:</c> line) starts on its own line.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_lineOpen) _console.Error.WriteLine();
            _lineOpen = false;
            _finished = true;
        }
    }
}
