namespace FlexGen.Host.Cli;

using System.Runtime.InteropServices;

/// <summary>
/// The CLI's one signal-handling path: SIGINT (Ctrl-C) and SIGTERM cancel the command (<see cref="Cancelled"/>), which
/// then frees every tier, deletes the offload files and exits <see cref="ExitCode"/> (130 or 143). A later signal,
/// however many, never ends the process at once: it only stops waiting for a running step (<see cref="Abandoned"/>), so
/// the offload files are deleted now. System.CommandLine's and the generic host's own handlers are turned off.
/// </summary>
public sealed class CliSignals : IDisposable
{
    private readonly CancellationTokenSource _cancelled = new();
    private readonly CancellationTokenSource _abandoned = new();
    private readonly List<PosixSignalRegistration> _registrations = [];
    private readonly Lock _lock = new();
    private readonly List<Action> _cleanups = [];
    private int _exitCode;
    private int _count;
    private bool _disposed;

    /// <summary>Signalled by the first SIGINT/SIGTERM.</summary>
    public CancellationToken Cancelled => _cancelled.Token;

    /// <summary>Signalled by any signal after the first: stop waiting for a running step.</summary>
    public CancellationToken Abandoned => _abandoned.Token;

    /// <summary>0 while no signal arrived; 130 after a first SIGINT, 143 after a first SIGTERM (128 + the signal number).</summary>
    public int ExitCode => Volatile.Read(ref _exitCode);

    /// <summary>Signals received so far.</summary>
    public int Count => Volatile.Read(ref _count);

    private int _cancelledLineClaimed;

    /// <summary>
    /// True once, for whoever writes the one <c>cancelled</c> line first: an abandoned command's step can end and report
    /// its cancellation at the moment the CLI reports it for it.
    /// </summary>
    public bool ClaimCancelledLine() => Interlocked.Exchange(ref _cancelledLineClaimed, 1) == 0;

    /// <summary>Handles SIGINT and SIGTERM of this process until disposed.</summary>
    public static CliSignals Register()
    {
        var signals = new CliSignals();
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
        {
            signals._registrations.Add(PosixSignalRegistration.Create(signal, context =>
            {
                // The process never ends by the default action: cleanup first, then the exit code.
                context.Cancel = true;
                signals.Raise(context.Signal);
            }));
        }
        return signals;
    }

    /// <summary>What a delivered signal does (also for tests, without a signal).</summary>
    public void Raise(PosixSignal signal)
    {
        lock (_lock)
        {
            // A signal racing the end of the command finds nothing left to cancel.
            if (_disposed) return;
            _count++;
            if (_exitCode == 0)
            {
                _exitCode = signal == PosixSignal.SIGTERM ? ExitCodes.Terminated : ExitCodes.Interrupted;
                _cancelled.Cancel();
            }
            else
            {
                _abandoned.Cancel();
            }
        }
    }

    /// <summary>
    /// Adds what a later signal must do before the process exits without waiting (delete offload files); run by
    /// <see cref="RunAbandonCleanup"/>. Disposing the result removes it.
    /// </summary>
    public IDisposable OnAbandon(Action cleanup)
    {
        lock (_lock) _cleanups.Add(cleanup);
        return new Removal(this, cleanup);
    }

    /// <summary>Runs every <see cref="OnAbandon"/> cleanup now, on this thread; a failing one does not stop the others.</summary>
    public void RunAbandonCleanup()
    {
        Action[] cleanups;
        lock (_lock) cleanups = [.. _cleanups];
        foreach (var cleanup in cleanups)
        {
            try
            {
                cleanup();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Best effort as the process ends.
            }
        }
    }

    private sealed class Removal(CliSignals signals, Action cleanup) : IDisposable
    {
        public void Dispose()
        {
            lock (signals._lock) signals._cleanups.Remove(cleanup);
        }
    }

    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        lock (_lock)
        {
            // The token sources stay usable: a step abandoned by a later signal may still look at them as the process exits.
            _disposed = true;
        }
    }
}
