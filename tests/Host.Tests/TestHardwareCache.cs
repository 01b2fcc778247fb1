namespace FlexGen.Host.Tests;

using System.Runtime.CompilerServices;
using FlexGen.Actors.Benchmark;
using FlexGen.Tensors.Planning;
using static TorchSharp.torch;

/// <summary>
/// Bench's bounds and --policy auto read this machine's hardware profile from the user's cache, measuring it on first
/// use: the tests keep theirs in a temp folder (never the user's home), seeded with <see cref="Profile"/> so that no test
/// measures unless it means to.
/// </summary>
public static class TestHardwareCache
{
    /// <summary>Constants of the same order as this kind of machine's (2 cores, an emulated GPU, a local SSD).</summary>
    public static HardwareProfile Profile { get; } = new()
    {
        CtogBdw = 15e9, GtocBdwCache = 15e9, GtocBdwHidden = 80e9, DtocBdw = 1.3e9, CtodBdwCacheP = 3e9, CtodBdwHiddenP = 3e9,
        CtodBdwG = 3e9, MmFlopsP = 150e9, MmFlopsG = 80e9, BmmFlopsP = 100e9, BmmFlopsG = 15e9, CpuFlops = 15e9,
        C1 = 0.0168, C2 = 0.0328, C3 = 0.0621, CompBdw = 0.5e9,
    };

    public static string Directory { get; } = Path.Combine(Path.GetTempPath(), $"flexgen-host-tests-cache-{Environment.ProcessId}");

    [ModuleInitializer]
    internal static void UseTempCache()
    {
        Environment.SetEnvironmentVariable(HardwareProfileCache.DirectoryVariable, Directory);
        var cache = HardwareProfileCache.Default;
        System.IO.Directory.CreateDirectory(Directory);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
            File.WriteAllText(cache.PathFor(dtype), Profile.ToJson());
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                System.IO.Directory.Delete(Directory, recursive: true);
            }
            catch (IOException)
            {
            }
        };
    }

    /// <summary>The seeded profile written to <paramref name="folder"/> as a --hardware file.</summary>
    public static string WriteFile(TempFolder folder)
    {
        string path = folder.File("hardware.json");
        File.WriteAllText(path, Profile.ToJson());
        return path;
    }
}
