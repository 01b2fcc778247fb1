namespace FlexGen.Host.Cli;

using System.Runtime.InteropServices;
using FlexGen.Tensors;

/// <summary>
/// Lets libtorch's Intel MKL run its fast float32 kernels on AMD CPUs. MKL picks its optimised code paths only on CPUs it
/// calls Intel, so on AMD it runs generic kernels (perf: <c>mkl_blas_def_sgemm_kernel_0_zen</c>); with
/// <c>native/mkl-cpu/libflexgen_mkl_cpu.so</c> preloaded it dispatches by the CPU's feature flags as on Intel (OPT-125m float32
/// on this project's AMD EPYC VM: prefill about 660 -> 900 token/s, decode 85 -> 115 at 8 x 1). A preload only works at
/// process start, so <see cref="StartupEnvironment"/> restarts the process with <c>LD_PRELOAD</c> set. bfloat16 runs through oneDNN and
/// is not affected. <c>FLEXGEN_MKL_AMD=0</c> turns it off; an application embedding the engine can set <c>LD_PRELOAD</c>
/// itself.
/// </summary>
public static class MklCpuDispatch
{
    /// <summary>The file name of the preloaded library, in <c>native/</c> beside the flexgen assembly.</summary>
    public const string LibraryName = "libflexgen_mkl_cpu.so";

    /// <summary>The environment variable that turns the preload off: 0, false, no or off (<see cref="StartupEnvironment.IsOff"/>).</summary>
    public const string OptOutVariable = "FLEXGEN_MKL_AMD";

    /// <summary>The environment variable the dynamic loader reads its preloads from at start.</summary>
    public const string PreloadVariable = "LD_PRELOAD";

    /// <summary>Where the library is expected: <c>native/</c> beside the flexgen assembly.</summary>
    public static string LibraryPath => Path.Combine(AppContext.BaseDirectory, "native", LibraryName);

    /// <summary>True when this process runs with the library preloaded (MKL uses its Intel code paths).</summary>
    public static bool Active => IsPreloaded(Environment.GetEnvironmentVariable(PreloadVariable));

    /// <summary>
    /// The <c>LD_PRELOAD</c> this process should restart with, or null: on an AMD x86-64 Linux machine, when the library
    /// is there, not yet preloaded and not turned off.
    /// </summary>
    public static string? PreloadToSet()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return null;
        string library = LibraryPath;
        string? preload = Environment.GetEnvironmentVariable(PreloadVariable);
        return ShouldPreload(CpuVendor(), preload, Environment.GetEnvironmentVariable(OptOutVariable), File.Exists(library))
            ? WithLibrary(preload, library)
            : null;
    }

    /// <summary>The rule: AMD, the library present, not already preloaded, not turned off.</summary>
    public static bool ShouldPreload(string? cpuVendor, string? ldPreload, string? optOut, bool libraryExists) =>
        cpuVendor == "AuthenticAMD" && libraryExists && !IsPreloaded(ldPreload) && !StartupEnvironment.IsOff(optOut);

    /// <summary>LD_PRELOAD with the library first, keeping what was there (space or colon separated).</summary>
    public static string WithLibrary(string? ldPreload, string library) =>
        string.IsNullOrWhiteSpace(ldPreload) ? library : $"{library}:{ldPreload}";

    private static bool IsPreloaded(string? ldPreload) =>
        ldPreload is not null && ldPreload.Split([':', ' '], StringSplitOptions.RemoveEmptyEntries)
            .Any(p => Path.GetFileName(p) == LibraryName);

    // vendor_id of the first processor in /proc/cpuinfo (GenuineIntel, AuthenticAMD, ...); null when unreadable.
    private static string? CpuVendor() => CpuInfo.Read() is { } cpuinfo ? CpuInfo.Value(cpuinfo, "vendor_id") : null;
}
