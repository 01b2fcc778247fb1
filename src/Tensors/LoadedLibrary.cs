namespace FlexGen.Tensors;

using System.Runtime.InteropServices;
using TorchSharp;

/// <summary>
/// A native library libtorch has already loaded into this process (libgomp, libtorch_cpu, TorchSharp's own), found by
/// its file name in <c>/proc/self/maps</c>, so its exported C functions can be called: the very copy libtorch uses, not
/// another one the loader might pick by name. Linux only; elsewhere nothing is found and callers fall back.
/// </summary>
public static class LoadedLibrary
{
    /// <summary>
    /// The handle of the first mapped library whose file name starts with <paramref name="fileNamePrefix"/>, or null
    /// where none is mapped (or not on Linux). Loads libtorch first if nothing has yet.
    /// </summary>
    public static IntPtr? Find(string fileNamePrefix)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileNamePrefix);
        if (!OperatingSystem.IsLinux()) return null;
        torch.get_num_threads(); // loads libtorch and its dependencies if nothing has yet
        var path = KernelFile.Read("/proc/self/maps")?.Split('\n')
            .Select(line => line.IndexOf('/') is var slash and >= 0 ? line[slash..].Trim() : null)
            .FirstOrDefault(p => p is not null && Path.GetFileName(p).StartsWith(fileNamePrefix, StringComparison.Ordinal));
        return path is not null && NativeLibrary.TryLoad(path, out var handle) ? handle : null;
    }

    /// <summary>The exported symbols of <paramref name="library"/>, all or nothing: null if any is missing.</summary>
    public static IntPtr[]? Exports(IntPtr? library, params string[] names)
    {
        if (library is not { } handle) return null;
        var found = new IntPtr[names.Length];
        for (int i = 0; i < names.Length; i++)
        {
            if (!NativeLibrary.TryGetExport(handle, names[i], out found[i])) return null;
        }

        return found;
    }
}
