namespace FlexGen.Host.Cli;

/// <summary>Where a command writes: results to <see cref="Output"/>, progress and errors to <see cref="Error"/>.</summary>
/// <param name="Terminal">Whether <see cref="Error"/> is a terminal; null: find out (tests set it to draw into a writer).</param>
public sealed record CliConsole(TextWriter Output, TextWriter Error, bool Verbose, bool? Terminal = null)
{
    /// <summary>True when progress may redraw one line in place (a real terminal, not redirected or captured).</summary>
    public bool Interactive => Terminal ??
        (ReferenceEquals(Error, Console.Error) && !Console.IsErrorRedirected && !Console.IsOutputRedirected);

    public ProgressReporter Progress(string stage, long total, string unit = "", Func<long, string>? format = null, bool announce = true) =>
        new(this, stage, total, unit, format, announce);

    /// <summary>The process's signals when run by <c>flexgen</c> itself (null in-process).</summary>
    public CliSignals? Signals { get; init; }

    /// <summary>Signalled when waiting for a running step to finish should stop (a second SIGINT/SIGTERM).</summary>
    public CancellationToken Abandon => Signals?.Abandoned ?? CancellationToken.None;
}
