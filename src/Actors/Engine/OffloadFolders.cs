namespace FlexGen.Actors.Engine;

using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

/// <summary>
/// The folders FlexGen makes for offloaded tensors: private to the user (700; the disk tier's files are 600), named
/// <c>&lt;prefix&gt;-&lt;pid&gt;-&lt;guid&gt;</c> so that a later run can tell those of dead processes and remove them.
/// </summary>
public static partial class OffloadFolders
{
    /// <summary>The prefix of a backend's folder under the offload directory: <c>flexgen-&lt;pid&gt;-&lt;guid&gt;</c>.</summary>
    public const string BackendPrefix = "flexgen";

    /// <summary>rwx for the owner only.</summary>
    public const UnixFileMode PrivateFolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>A fresh folder name of this process: <c>&lt;prefix&gt;-&lt;pid&gt;-&lt;32 hex digits&gt;</c>.</summary>
    public static string NewName(string prefix = BackendPrefix) => $"{prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}";

    /// <summary>
    /// Creates <paramref name="path"/> (and any missing parent) readable only by the user (700); a folder already
    /// there keeps its mode.
    /// </summary>
    public static void CreatePrivate(string path)
    {
        path = Path.GetFullPath(path);
        if (Directory.Exists(path)) return;
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
            return;
        }

        // Each missing level 700, parents first (CreateDirectory's mode would reach only the last one).
        var missing = new Stack<string>();
        for (string? level = path; level is not null && !Directory.Exists(level); level = Path.GetDirectoryName(level)) missing.Push(level);
        while (missing.TryPop(out var level)) Directory.CreateDirectory(level, PrivateFolderMode);
    }

    /// <summary>
    /// Removes the folders directly in <paramref name="directory"/> named exactly <c>&lt;prefix&gt;-&lt;pid&gt;-&lt;32 hex digits&gt;</c>
    /// whose process is not running (a killed run's). Anything else is left alone: other names, links, folders of running
    /// processes (this one included, and a pid reused by another process) and what cannot be removed.
    /// </summary>
    public static OffloadSweep RemoveStale(string directory, string prefix = BackendPrefix)
    {
        var removed = new List<string>();
        long freed = 0;
        if (!Directory.Exists(directory)) return new OffloadSweep(directory, removed, 0);
        IEnumerable<DirectoryInfo> candidates;
        try
        {
            candidates = new DirectoryInfo(directory).EnumerateDirectories(prefix + "-*", new EnumerationOptions { AttributesToSkip = 0 }).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new OffloadSweep(directory, removed, 0);
        }

        foreach (var folder in candidates)
        {
            var match = FolderName().Match(folder.Name);
            if (!match.Success || match.Groups["prefix"].Value != prefix || IsLink(folder.FullName)) continue;
            if (!int.TryParse(match.Groups["pid"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) continue;
            if (pid == Environment.ProcessId || IsProcessRunning(pid)) continue;
            long bytes = SizeOf(folder);
            try
            {
                folder.Delete(recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Someone else's, or in use: not ours to force. Only what went is counted.
                folder.Refresh();
                long left = folder.Exists ? SizeOf(folder) : 0;
                freed += Math.Max(0, bytes - left);
                if (folder.Exists) continue;
                bytes = 0;
            }

            removed.Add(folder.FullName);
            freed += bytes;
        }

        return new OffloadSweep(directory, removed, freed);
    }

    /// <summary>A link (to a folder or anywhere): never followed, never removed here.</summary>
    private static bool IsLink(string path)
    {
        var entry = new FileInfo(path);
        return entry.LinkTarget is not null || (entry.Exists || Directory.Exists(path)) && entry.Attributes.HasFlag(FileAttributes.ReparsePoint);
    }

    /// <summary>True unless the system says no process has this id (a process of another user counts as running).</summary>
    public static bool IsProcessRunning(int pid)
    {
        if (pid <= 0) return true;
        if (OperatingSystem.IsWindows())
        {
            try
            {
                using var process = Process.GetProcessById(pid);
                return !process.HasExited;
            }
            catch (ArgumentException)
            {
                return false;
            }
        }

        if (SysKill(pid, 0) == 0) return true;
        return Marshal.GetLastPInvokeError() != 3; // ESRCH: no such process; EPERM: alive, not ours to signal
    }

    private static long SizeOf(DirectoryInfo folder)
    {
        long bytes = 0;
        try
        {
            // Links are not followed: only what the folder itself holds.
            foreach (var file in folder.EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true }))
            {
                bytes += file.Length;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return bytes;
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    [GeneratedRegex(@"^(?<prefix>[a-z-]+)-(?<pid>[0-9]{1,10})-[0-9a-f]{32}$", RegexOptions.CultureInvariant)]
    private static partial Regex FolderName();
}

/// <summary>What <see cref="OffloadFolders.RemoveStale"/> removed from <see cref="Directory"/>.</summary>
public sealed record OffloadSweep(string Directory, IReadOnlyList<string> Removed, long FreedBytes)
{
    /// <summary>One line: how many folders of dead runs were removed and how much that freed.</summary>
    public string Describe() =>
        string.Create(CultureInfo.InvariantCulture,
            $"removed {Removed.Count} offload folder{(Removed.Count == 1 ? "" : "s")} of dead flexgen processes from {Directory}, freed {FormatBytes(FreedBytes)}");

    private static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.0} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.0} MiB"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 10):0.0} KiB"),
        _ => $"{bytes} B",
    };
}
