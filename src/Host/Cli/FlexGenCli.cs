namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.CommandLine.Parsing;
using FlexGen.Host.Hosting;

/// <summary>
/// The <c>flexgen</c> command line: generate, bench, convert (and the tier/pipeline benchmarks). Tests call
/// <see cref="RunAsync"/> in-process with their own writers.
/// </summary>
public static class FlexGenCli
{
    /// <summary>Prints stack traces and inner exceptions of failures.</summary>
    public static readonly Option<bool> VerboseOption = new("--verbose", "-v")
    {
        Description = "Print details (stack traces) of failures.",
        Recursive = true,
    };

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand(
            "FlexGen.Actors: high-throughput LLM generation with weights, KV cache and activations offloaded " +
            "over GPU, CPU and disk.");
        root.Options.Add(VerboseOption);
        root.Subcommands.Add(GenerateCommand.Build());
        root.Subcommands.Add(BenchCommand.Build());
        root.Subcommands.Add(ServeCommand.Build());
        root.Subcommands.Add(WorkerCommand.Build());
        root.Subcommands.Add(ConvertCommand.Build());
        foreach (var extra in ExtraCommands.Build()) root.Subcommands.Add(extra);
        root.Subcommands.Add(PlanCommand.Build());
        return root;
    }

    /// <summary>The signals of the running command line (<see cref="RunAsync(string[], TextWriter, TextWriter, CliSignals)"/>).</summary>
    private static readonly AsyncLocal<CliSignals?> CurrentSignals = new();

    /// <summary>
    /// Runs one command line under the process's signals: SIGINT / SIGTERM cancel it (one <c>cancelled</c> line, every
    /// tier freed, offload files deleted) and it returns 130 / 143.
    /// </summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CliSignals signals)
    {
        CurrentSignals.Value = signals;
        try
        {
            var run = RunAsync(args, output, error, signals.Cancelled);
            if (await Task.WhenAny(run, WhenSignalled(signals.Cancelled)).ConfigureAwait(false) != run)
            {
                // A step in flight finishes before its files can go (it may be writing them): say why the exit waits.
                if (await Task.WhenAny(run, Task.Delay(SilentWait)).ConfigureAwait(false) != run)
                    await error.WriteLineAsync($"cancelled: {WaitingLine} (signal again to delete them now)").ConfigureAwait(false);
                if (await Task.WhenAny(run, WhenSignalled(signals.Abandoned)).ConfigureAwait(false) != run)
                {
                    // A later signal: the offload files go now, from under the step; the process exits without waiting for it.
                    signals.RunAbandonCleanup();
                    await SayCancelledAsync(error).ConfigureAwait(false);
                    return signals.ExitCode;
                }
            }
            int code = await run.ConfigureAwait(false);
            // Cancelled, also when the command got to its end before it saw the signal.
            if (signals.ExitCode == 0) return code;
            // Its cleanup cut short by a later signal: the files go now.
            if (signals.Abandoned.IsCancellationRequested) signals.RunAbandonCleanup();
            await SayCancelledAsync(error).ConfigureAwait(false);
            return signals.ExitCode;
        }
        finally
        {
            CurrentSignals.Value = null;
        }
    }

    /// <summary>The one <c>cancelled</c> line of a command line, whoever reaches it first (the command or the signal path).</summary>
    private static async Task SayCancelledAsync(TextWriter error)
    {
        if (CurrentSignals.Value is { } signals && !signals.ClaimCancelledLine()) return;
        await error.WriteLineAsync("cancelled").ConfigureAwait(false);
    }

    /// <summary>Said when a signal's cleanup waits for a running step.</summary>
    public const string WaitingLine = "waiting for the running step to finish before deleting offload files";

    /// <summary>How long a signal's cleanup may take before <see cref="WaitingLine"/> says why the exit waits.</summary>
    private static readonly TimeSpan SilentWait = TimeSpan.FromMilliseconds(500);

    private static Task WhenSignalled(CancellationToken token) => Task.Delay(Timeout.Infinite, token).ContinueWith(
        _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    /// <summary>
    /// Parses and runs one command line. Returns 0 on success, 2 on a usage error (a run over a tier's budget too), 1 on a failure or when
    /// <paramref name="cancellation"/> cancelled it (one line: <c>cancelled</c>).
    /// </summary>
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellation = default)
    {
        var root = BuildRoot();
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var line in DescribeParseErrors(parse)) await error.WriteLineAsync($"error: {line}");
            await error.WriteLineAsync(UsageHint(parse));
            return ExitCodes.Usage;
        }
        // No ProcessTerminationTimeout: System.CommandLine's own SIGINT/SIGTERM handler stays off (CliSignals is the one path).
        var invocation = new InvocationConfiguration
        {
            Output = output, Error = error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null,
        };
        var console = new CliConsole(output, error, parse.GetValue(VerboseOption));
        try
        {
            return await parse.InvokeAsync(invocation, cancellation);
        }
        catch (Exception ex)
        {
            return await ReportAsync(parse, console, ex, cancellation);
        }
    }

    /// <summary>
    /// Starts the runtime a command runs on (<see cref="FlexGenRuntime.StartAsync"/>), runs <paramref name="body"/> with
    /// it, then shuts it down. A failure of the body, unless cancelled, is reported (<see cref="ReportAsync"/>) before
    /// the shutdown, which a lost cluster stage holds for Akka's termination timeout; a cancellation, or a failure to
    /// start, goes on to the caller (the CLI's last catch reports it).
    /// </summary>
    /// <param name="geometry">The run's prompt and generation lengths, checked against the tier budgets before the host starts.</param>
    /// <param name="measureHardware">The command reads the hardware profile: measured on first use before the threads are chosen by it.</param>
    public static async Task<int> RunWithRuntimeAsync(ParseResult parse, CliConsole console, FlexGenOptions options, ResolvedModel? model,
        (int PromptLen, int GenLen)? geometry, Func<FlexGenRuntime, Task<int>> body, CancellationToken cancellation, bool measureHardware = false)
    {
        ArgumentNullException.ThrowIfNull(body);
        await using var runtime = await FlexGenRuntime.StartAsync(options, model, console, cancellation, geometry, measureHardware);
        try
        {
            return await body(runtime);
        }
        catch (Exception ex) when (!cancellation.IsCancellationRequested)
        {
            return await ReportAsync(parse, console, ex, cancellation);
        }
    }

    /// <summary>
    /// The one report of a command's failure on standard error, and its exit code: <c>cancelled</c> when
    /// <paramref name="cancellation"/> was requested; a usage error (with the usage hint) for a bad flag or option, a
    /// refused <c>--policy auto</c> or a run over a tier's budget; else one <c>failed:</c> line (--verbose adds the stack
    /// trace). A command holding a runtime reports through this before the runtime shuts down (<see cref="RunWithRuntimeAsync"/>).
    /// </summary>
    public static async Task<int> ReportAsync(ParseResult parse, CliConsole console, Exception ex, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(console);
        ArgumentNullException.ThrowIfNull(ex);
        var error = console.Error;
        switch (ex)
        {
            case var _ when cancellation.IsCancellationRequested:
                // Whatever the cancellation surfaced as (a cancelled request, a load given up, a task stopped): one line.
                await SayCancelledAsync(error);
                return ExitCodes.Failure;
            case UsageException or FlexGenOptionsException:
                // The embedding API names its options by configuration key; the CLI says which flag set it.
                string message = ex is FlexGenOptionsException options ? options.Describe(GenerationFlags.FlagOf(options.Key)) : ex.Message;
                await error.WriteLineAsync($"error: {message}");
                await error.WriteLineAsync(UsageHint(parse));
                return ExitCodes.Usage;
            case NoPolicyFitsException noFit:
                // --policy auto within budgets nothing fits: the user's budgets, a usage error like a refused run.
                await error.WriteLineAsync($"error: --policy auto: {noFit.Message} --gpu-mem, --cpu-mem and --disk-mem set the budgets (GB of 2^30 bytes).");
                return ExitCodes.Usage;
            case var _ when GenerationFlags.BudgetRefusal(ex) is { } refused:
                // The user asked for more than a tier's budget: refused up front, a usage error in one line.
                await error.WriteLineAsync($"error: {GenerationFlags.DescribeRefusal(refused)}");
                return ExitCodes.Usage;
            default:
                // One line; --verbose adds the stack trace and inner exceptions below it.
                if (console.Verbose) await error.WriteLineAsync($"failed: {Describe(ex)}\n{ex}");
                else await error.WriteLineAsync($"failed: {Describe(ex)} (--verbose for details)");
                return ExitCodes.Failure;
        }
    }

    /// <summary>The console a command writes to, from its parse result.</summary>
    public static CliConsole ConsoleOf(ParseResult parse) =>
        new(parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error, parse.GetValue(VerboseOption))
        {
            Signals = CurrentSignals.Value,
        };

    /// <summary>
    /// One line per problem: System.CommandLine reports a missing argument once per argument without naming it, and
    /// each unknown token separately; these become one line each that names them.
    /// </summary>
    public static IReadOnlyList<string> DescribeParseErrors(ParseResult parse)
    {
        var lines = new List<string>();
        var command = parse.CommandResult.Command;
        string path = CommandPath(parse);
        var missing = parse.Errors
            .Select(e => e.SymbolResult)
            .OfType<ArgumentResult>()
            .Where(r => r.Tokens.Count < r.Argument.Arity.MinimumNumberOfValues)
            .Select(r => r.Argument)
            .Distinct()
            .ToList();
        if (missing.Count > 0)
        {
            string usage = string.Join(' ', command.Arguments.Select(a => $"<{a.Name}>"));
            lines.Add($"missing argument{(missing.Count > 1 ? "s" : "")} {string.Join(' ', missing.Select(a => $"<{a.Name}>"))} " +
                      $"(usage: flexgen {path} {usage})");
        }
        var unmatched = parse.UnmatchedTokens;
        bool atRoot = parse.CommandResult.Parent is null;
        string commands = string.Join(", ", command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name));
        if (unmatched.Count > 0)
        {
            lines.Add(atRoot
                ? $"unknown command '{unmatched[0]}' (commands: {commands})"
                : $"'{path}' does not take {string.Join(", ", unmatched.Select(t => $"'{t}'"))}");
        }
        foreach (var e in parse.Errors)
        {
            if (e.SymbolResult is ArgumentResult r && missing.Contains(r.Argument)) continue;
            // Unknown tokens are reported on the command, one error each, quoting the token.
            if (e.SymbolResult is CommandResult && unmatched.Any(t => e.Message.Contains($"'{t}'", StringComparison.Ordinal))) continue;
            // At the root the remaining error is "Required command was not provided".
            if (atRoot && e.SymbolResult is CommandResult { Parent: null })
            {
                if (unmatched.Count == 0) lines.Add($"no command given (commands: {commands})");
                continue;
            }
            if (!lines.Contains(e.Message)) lines.Add(e.Message);
        }
        return lines;
    }

    private static string UsageHint(ParseResult parse) =>
        $"Run '{string.Join(' ', ["flexgen", CommandPath(parse)]).TrimEnd()} --help' for usage.";

    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var r = parse.CommandResult; r is not null; r = r.Parent as CommandResult)
            if (r.Parent is not null) names.Insert(0, r.Command.Name);
        return string.Join(' ', names);
    }

    /// <summary>One line: what failed and why (the innermost cause when wrapped).</summary>
    private static string Describe(Exception ex)
    {
        if (ex is AggregateException { InnerExceptions.Count: 1 } agg) ex = agg.InnerExceptions[0];
        string text = ex.Message;
        // An OutputFileException already says why in its own words.
        if (ex is not OutputFileException && ex.InnerException is { } inner && !text.Contains(inner.Message, StringComparison.Ordinal))
            text += $" ({inner.Message})";
        return text.ReplaceLineEndings(" ");
    }
}
