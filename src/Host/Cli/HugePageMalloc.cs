namespace FlexGen.Host.Cli;

using System.Runtime.InteropServices;

/// <summary>
/// Lets glibc's malloc, which libtorch allocates every CPU tensor through, back its memory with transparent huge pages
/// (the tunable <c>glibc.malloc.hugetlb=1</c>, glibc 2.35 and later). Where the kernel gives huge pages only to memory
/// that asks for them (<c>/sys/kernel/mm/transparent_hugepage/enabled</c> is <c>madvise</c>, Debian's and Ubuntu's
/// default), a fresh tensor is otherwise faulted in 4 KiB at a time: on this project's VM about 17 us a page, so a large
/// matmul's output (a (4096, 8192) float32 MLP activation, 128 MiB, is mmap'd fresh at every call) cost more to fault in
/// than to compute (OPT-1.3B float32 prefill at 64 x 4: 70.6 -> 128.6 token/s). Set through the environment at process
/// start (<see cref="StartupEnvironment"/>); <c>FLEXGEN_HUGE_PAGES=0</c> turns it off. An application embedding the
/// engine can set <c>GLIBC_TUNABLES=glibc.malloc.hugetlb=1</c> itself.
/// </summary>
public static partial class HugePageMalloc
{
    /// <summary>The glibc tunable, as set.</summary>
    public const string Tunable = "glibc.malloc.hugetlb=1";

    /// <summary>The environment variable that turns it off: 0, false, no or off (<see cref="StartupEnvironment.IsOff"/>).</summary>
    public const string OptOutVariable = "FLEXGEN_HUGE_PAGES";

    /// <summary>The environment variable glibc reads its tunables from at start (colon separated).</summary>
    public const string TunablesVariable = "GLIBC_TUNABLES";

    private const string TunableName = "glibc.malloc.hugetlb";
    private static readonly Version FirstGlibc = new(2, 35);

    /// <summary>True when this process's malloc runs with the tunable set (glibc 2.35 or later).</summary>
    public static bool Active =>
        GlibcVersion() >= FirstGlibc && Tunables(Environment.GetEnvironmentVariable(TunablesVariable)).Contains(Tunable);

    /// <summary>The <c>GLIBC_TUNABLES</c> this process should restart with, or null (<see cref="ShouldEnable"/>).</summary>
    public static string? TunablesToSet()
    {
        string? tunables = Environment.GetEnvironmentVariable(TunablesVariable);
        return ShouldEnable(GlibcVersion(), KernelMode(), tunables, Environment.GetEnvironmentVariable(OptOutVariable))
            ? WithTunable(tunables)
            : null;
    }

    /// <summary>
    /// The rule: glibc that knows the tunable, transparent huge pages given on request (<c>[madvise]</c>: with
    /// <c>[always]</c> the kernel already backs large allocations with them, with <c>[never]</c> there are none), the
    /// tunable not set either way in <paramref name="glibcTunables"/> (a user's own choice stands; after the restart it
    /// is set), and not turned off.
    /// </summary>
    public static bool ShouldEnable(Version? glibc, string? transparentHugePages, string? glibcTunables, string? optOut) =>
        glibc >= FirstGlibc && SelectedMode(transparentHugePages) == "madvise"
        && !Tunables(glibcTunables).Any(t => t.Split('=')[0] == TunableName)
        && !StartupEnvironment.IsOff(optOut);

    /// <summary><paramref name="glibcTunables"/> with the tunable added, keeping what was there.</summary>
    public static string WithTunable(string? glibcTunables) =>
        string.IsNullOrWhiteSpace(glibcTunables) ? Tunable : $"{glibcTunables}:{Tunable}";

    /// <summary>The mode in brackets of the kernel's <c>transparent_hugepage/enabled</c> (<c>always [madvise] never</c>).</summary>
    public static string? SelectedMode(string? transparentHugePages)
    {
        if (transparentHugePages is null) return null;
        int open = transparentHugePages.IndexOf('['), close = transparentHugePages.IndexOf(']');
        return open >= 0 && close > open ? transparentHugePages[(open + 1)..close] : null;
    }

    /// <summary>This machine's <c>transparent_hugepage/enabled</c>, or null without one.</summary>
    public static string? KernelMode() => Tensors.KernelFile.Read("/sys/kernel/mm/transparent_hugepage/enabled");

    /// <summary>The C library's version when it is glibc, else null.</summary>
    public static Version? GlibcVersion()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            return Version.TryParse(Marshal.PtrToStringUTF8(GnuGetLibcVersion()), out var version) ? version : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null; // musl and others
        }
    }

    private static string[] Tunables(string? glibcTunables) =>
        (glibcTunables ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    [LibraryImport("libc", EntryPoint = "gnu_get_libc_version")]
    private static partial nint GnuGetLibcVersion();
}
