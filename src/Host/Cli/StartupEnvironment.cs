namespace FlexGen.Host.Cli;

using System.Runtime.InteropServices;

/// <summary>
/// What flexgen computes under that only takes effect at process start: MKL's Intel code paths on AMD
/// (<see cref="MklCpuDispatch"/>, <c>LD_PRELOAD</c>), malloc on transparent huge pages (<see cref="HugePageMalloc"/>,
/// <c>GLIBC_TUNABLES</c>) and OpenMP's spin between parallel regions (<see cref="OpenMpSpin"/>, <c>GOMP_SPINCOUNT</c>).
/// <see cref="ApplyAndRestart"/>, called first thing in <c>Main</c>, replaces the process with itself (execve: same pid,
/// arguments, streams and signals) once, with every variable that is due set; after it each rule finds its variable set
/// and nothing restarts again.
/// </summary>
public static partial class StartupEnvironment
{
    /// <summary>
    /// Restarts this process in place when a variable is due (<see cref="Due"/>). Returns only when nothing is to be done
    /// or the restart failed (then the process goes on as it is).
    /// </summary>
    public static void ApplyAndRestart()
    {
        var due = Due();
        if (due.Count == 0) return;

        string[] argv;
        try
        {
            // The exact command line, as the kernel holds it: "dotnet flexgen.dll ..." or the app host's.
            argv = File.ReadAllText("/proc/self/cmdline").Split('\0', StringSplitOptions.None)[..^1];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }

        if (argv.Length == 0) return;
        var environment = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .Where(e => !due.ContainsKey((string)e.Key))
            .Select(e => $"{e.Key}={e.Value}")
            .Concat(due.Select(v => $"{v.Key}={v.Value}"));
        // execve returns only on failure; the process then carries on as it is. The program by its own path, so the
        // restarted process keeps its name (through /proc/self/exe, ps and top showed "exe").
        _ = Execve(Environment.ProcessPath ?? "/proc/self/exe", [.. argv, null], [.. environment, null]);
    }

    /// <summary>The variables to set (name -> whole new value) by each rule that applies here and now.</summary>
    public static IReadOnlyDictionary<string, string> Due()
    {
        var due = new Dictionary<string, string>();
        if (MklCpuDispatch.PreloadToSet() is { } preload) due[MklCpuDispatch.PreloadVariable] = preload;
        if (HugePageMalloc.TunablesToSet() is { } tunables) due[HugePageMalloc.TunablesVariable] = tunables;
        if (OpenMpSpin.SpinCountToSet() is { } spinCount) due[OpenMpSpin.SpinCountVariable] = spinCount;
        return due;
    }

    /// <summary>Whether an opt-out variable's value turns its setting off: 0, false, no or off.</summary>
    public static bool IsOff(string? value) =>
        value?.Trim().ToLowerInvariant() is "0" or "false" or "no" or "off";

    [LibraryImport("libc", EntryPoint = "execve", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Execve(string path, string?[] argv, string?[] envp);
}
