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

    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _cancelled.Dispose();
            _abandoned.Dispose();
        }
    }
}
