namespace FlexGen.Host.Tests;

using System.Diagnostics;
using FlexGen.Actors.Benchmark;
using System.Runtime.InteropServices;
using System.Text;
using static TorchSharp.torch;

/// <summary>
/// SIGINT / SIGTERM delivered to the built <c>flexgen</c> (a child process) while it loads weights and while it decodes:
/// one <c>cancelled</c> line, exit 130 / 143, no stack trace, no offload file left, however many signals arrive.
/// </summary>
[Collection(SignalCollection.Name)]
public partial class SignalTests
{
    private const int Sigint = 2, Sigterm = 15;

    /// <summary>opt-125m with dummy weights all on disk: a few seconds of loading, then a few seconds of decoding.</summary>
    private static string[] Bench(string offload, int promptLen = 8, int gpuBatchSize = 1, int genLen = 8) =>
    [
        "bench", "--model", "opt-125m", "--path", "_DUMMY_", "--percent", "0", "0", "100", "0", "100", "0",
        "--gpu-batch-size", $"{gpuBatchSize}", "--prompt-len", $"{promptLen}", "--gen-len", $"{genLen}", "--warmup", "false",
        "--compute-dtype", "float32", "--no-log", "--offload-dir", offload,
        // The seeded profile, named here: the child restarts itself with MKL preloaded, which changes its machine key, and
        // measuring its own took over the 60 s its first line is waited for on a slow VM.
        "--hardware", HardwareProfileCache.Default.PathFor(ScalarType.Float32),
    ];

    [SkippableTheory]
    [InlineData("load dummy weights: layer 4/", Sigint, 1)]
    [InlineData("load dummy weights: layer 4/", Sigterm, 2)]
    [InlineData("generate: 1/", Sigint, 1)]
    [InlineData("generate: 1/", Sigint, 2)]
    [InlineData("generate: 1/", Sigterm, 2)]
    public async Task A_signal_should_cancel_with_one_line_its_exit_code_and_no_offload_files(string after, int signal, int count)
    {
        using var folder = new TempFolder();
        using var child = FlexGenProcess.Start(Bench(folder.Path));
        Skip.If(signal == Sigint && child.Ignores(Sigint), FlexGenProcess.SigintIgnored);
        Assert.True(await child.WaitForErrorLine(l => l.StartsWith(after, StringComparison.Ordinal)), child.ToString());
        for (int i = 0; i < count; i++)
        {
            child.Signal(signal);
            await Task.Delay(100);
        }

        int code = await child.WaitForExit();
        AssertCancelled(child, code, signal);
        Assert.Empty(FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task A_signal_during_a_long_step_should_wait_for_it_say_so_and_still_delete_the_offload_files()
    {
        using var folder = new TempFolder();
        // Prefill of 2 x 1536 tokens: each layer step of the MLP takes about a second on 2 cores.
        using var child = FlexGenProcess.Start(Bench(folder.Path, promptLen: 1536, gpuBatchSize: 2, genLen: 2));
        Assert.True(await child.WaitForErrorLine(l => l.StartsWith("load dummy weights: done", StringComparison.Ordinal)), child.ToString());
        await Task.Delay(1500);
        child.Signal(Sigterm);
        var clock = Stopwatch.StartNew();
        int code = await child.WaitForExit();
        AssertCancelled(child, code, Sigterm);
        // The exit waits for the step: when that took long enough to notice, the CLI said why.
        if (clock.Elapsed > TimeSpan.FromSeconds(1.5))
            Assert.Contains("cancelled: waiting for the running step to finish before deleting offload files (signal again to delete them now)", child.ErrorLines);
        Assert.Empty(FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Bench_pipeline_should_keep_Akka_log_lines_off_its_standard_output()
    {
        using var folder = new TempFolder();
        string[] args = ["bench-pipeline", "--hidden-size", "64", "--heads", "4", "--blocks", "2", "--gpu-batch-size", "2",
            "--num-gpu-batches", "1", "--prompt-len", "4", "--gen-len", "3", "--direct-io", "false", "--offload-dir", folder.Path, "--verbose"];
        using var child = FlexGenProcess.Start(args);
        int code = await child.WaitForExit();

        Assert.True(code == 0, child.ToString());
        Assert.Contains("speedup overlap on / off", child.Output);
        Assert.DoesNotContain(child.OutputLines, l => l.StartsWith('[') || l.Contains("CoordinatedShutdown", StringComparison.Ordinal));
        // --verbose: Akka's INFO lines, on standard error.
        Assert.Contains(child.ErrorLines, l => l.StartsWith("[INFO]", StringComparison.Ordinal));
        Assert.Empty(FolderSnapshot.Names(folder.Path));
    }

    private static void AssertCancelled(FlexGenProcess child, int code, int signal)
    {
        Assert.True(code == (signal == Sigint ? 130 : 143), child.ToString());
        var lines = child.ErrorLines.Where(l => l.Length > 0).ToList();
        Assert.True(lines.Count(l => l == "cancelled") == 1 && lines[^1] == "cancelled", child.ToString());
        Assert.DoesNotContain(lines, l => l.Contains("Unhandled exception", StringComparison.Ordinal) || l.StartsWith("   at ", StringComparison.Ordinal)
                                          || l.StartsWith("failed:", StringComparison.Ordinal) || l.Contains("Exception", StringComparison.Ordinal));
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SignalCollection
{
    public const string Name = "signals";
}

/// <summary>The built flexgen (the Host project's output beside the tests) as a child process with captured output.</summary>
public sealed partial class FlexGenProcess : IDisposable
{
    public const string SigintIgnored =
        "SIGINT is ignored in this process tree (e.g. started in the background by a non-interactive shell), so it cannot be delivered to flexgen";

    private readonly Process _process;
    private readonly StringBuilder _output = new(), _error = new();
    private readonly List<string> _outputLines = [], _errorLines = [];
    private readonly TaskCompletionSource _outputDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _errorDone = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private FlexGenProcess(string[] args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "flexgen.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => Add(e.Data, _output, _outputLines, _outputDone);
        _process.ErrorDataReceived += (_, e) => Add(e.Data, _error, _errorLines, _errorDone);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static FlexGenProcess Start(params string[] args) => new(args);

    /// <summary>Starts flexgen with these environment variables set (beside the test process's own).</summary>
    public static FlexGenProcess StartWith(IReadOnlyDictionary<string, string> environment, params string[] args) => new(args, environment);

    public string Output { get { lock (_output) return _output.ToString(); } }

    public IReadOnlyList<string> OutputLines { get { lock (_output) return [.. _outputLines]; } }

    public IReadOnlyList<string> ErrorLines { get { lock (_error) return [.. _errorLines]; } }

    /// <summary>Whether the child ignores <paramref name="signal"/> (inherited SIG_IGN: the signal cannot reach it).</summary>
    public bool Ignores(int signal)
    {
        string status = File.ReadAllText($"/proc/{_process.Id}/status");
        string mask = status.Split('\n').First(l => l.StartsWith("SigIgn:", StringComparison.Ordinal))["SigIgn:".Length..].Trim();
        return (Convert.ToUInt64(mask, 16) & (1UL << (signal - 1))) != 0;
    }

    public void Signal(int signal) => Assert.True(SysKill(_process.Id, signal) == 0, $"kill({_process.Id}, {signal}) failed");

    public bool HasExited => _process.HasExited;

    /// <summary>Waits (at most <paramref name="limit"/>, 60 s by default) for a line of standard error; false if the process ended or time ran out first.</summary>
    public async Task<bool> WaitForErrorLine(Func<string, bool> match, TimeSpan? limit = null)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < (limit ?? TimeSpan.FromSeconds(60)))
        {
            if (ErrorLines.Any(match)) return true;
            if (_process.HasExited) return ErrorLines.Any(match);
            await Task.Delay(20);
        }
        return false;
    }

    /// <summary>The exit code, once the process and its output have ended (at most <paramref name="limit"/>, 60 s by default, then it is killed).</summary>
    public async Task<int> WaitForExit(TimeSpan? limit = null)
    {
        using var timeout = new CancellationTokenSource(limit ?? TimeSpan.FromSeconds(60));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
            await Task.WhenAll(_outputDone.Task, _errorDone.Task).WaitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            Assert.Fail($"flexgen did not exit within {(limit ?? TimeSpan.FromSeconds(60)).TotalSeconds:0} s\n{this}");
        }
        return _process.ExitCode;
    }

    public override string ToString() => $"--- stdout\n{Output}\n--- stderr\n{string.Join('\n', ErrorLines)}";

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }

    private static void Add(string? line, StringBuilder text, List<string> lines, TaskCompletionSource done)
    {
        if (line is null)
        {
            done.TrySetResult();
            return;
        }
        lock (text)
        {
            text.AppendLine(line);
            lines.Add(line);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);
}
