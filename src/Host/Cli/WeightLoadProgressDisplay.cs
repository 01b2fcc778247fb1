namespace FlexGen.Host.Cli;

using System.Globalization;
using FlexGen.Tensors.Tiers;

/// <summary>
/// Shows weight loading on a <see cref="ProgressReporter"/>: a start line, then the layers' <see cref="WeightLoadProgress"/>
/// in bytes (a bar on a terminal, plain lines when output is redirected), then how long it took.
/// </summary>
public sealed class WeightLoadProgressDisplay : IProgress<WeightLoadProgress>, IDisposable
{
    private readonly CliConsole _console;
    private readonly string _stage;
    private ProgressReporter? _reporter;

    /// <param name="stage">"load weights" or "load dummy weights".</param>
    /// <param name="start">What is loaded, for the start line (model, size).</param>
    public WeightLoadProgressDisplay(CliConsole console, string stage, string start)
    {
        _console = console;
        _stage = stage;
        console.Error.WriteLine($"{stage}: {start} ...");
    }

    public void Report(WeightLoadProgress value)
    {
        // The total is known at the first report; the start line already announced the stage.
        _reporter ??= _console.Progress(_stage, value.TotalBytes, Unit(value.TotalBytes), Format(value.TotalBytes), announce: false);
        _reporter.Report(value.BytesLoaded, $"layer {value.Layer + 1}/{value.LayerCount}");
    }

    /// <summary>Ends the bar and says how long loading took.</summary>
    public void Complete(TimeSpan elapsed)
    {
        Dispose();
        _console.Error.WriteLine($"{_stage}: done in {elapsed.TotalSeconds:F2} s");
    }

    /// <summary>Ends the bar's line (loading failed or was cancelled when it was not completed).</summary>
    public void Dispose() => _reporter?.Dispose();

    private static bool InGb(long total) => total >= 1L << 30;

    private static string Unit(long total) => InGb(total) ? "GB" : "MB";

    private static Func<long, string> Format(long total) => InGb(total)
        ? bytes => (bytes / (double)(1L << 30)).ToString("F2", CultureInfo.InvariantCulture)
        : bytes => (bytes / (double)(1L << 20)).ToString("F1", CultureInfo.InvariantCulture);
}
