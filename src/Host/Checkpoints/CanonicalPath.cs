namespace FlexGen.Host.Checkpoints;

/// <summary>
/// Paths compared by what they name on disk: absolute, symbolic links resolved in every component, <c>.</c> and
/// <c>..</c> applied physically (after the link before them is resolved, as the kernel does), no trailing separator.
/// The part of a path that does not exist yet is kept as written.
/// </summary>
public static class CanonicalPath
{
    /// <summary>The kernel's own limit on links followed in one lookup (ELOOP).</summary>
    private const int MaxLinksFollowed = 40;

    /// <summary>Case-insensitive where the usual file systems are.</summary>
    private static readonly StringComparison Comparison =
        OperatingSystem.IsWindows() || OperatingSystem.IsMacOS() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;

    /// <exception cref="IOException">More than 40 links on the way (a loop).</exception>
    public static string Of(string path)
    {
        string absolute = Path.IsPathRooted(path) ? path : Path.Combine(Directory.GetCurrentDirectory(), path);
        string root = Path.GetPathRoot(absolute)!;
        var pending = new Queue<string>(Components(absolute, root));
        string current = root;
        int linksFollowed = 0;
        while (pending.TryDequeue(out var name))
        {
            if (name == ".") continue;
            if (name == "..")
            {
                current = Path.GetDirectoryName(current) ?? root;
                continue;
            }
            string next = Path.Combine(current, name);
            // LinkTarget reads the link itself (lstat), so a link to a missing target is still seen as a link.
            if (new FileInfo(next).LinkTarget is not { } target)
            {
                current = next;
                continue;
            }
            if (++linksFollowed > MaxLinksFollowed)
                throw new IOException($"{path}: more than {MaxLinksFollowed} symbolic links on the way (a link loop?).");
            // A relative target is relative to the link's folder; its components go before the rest of the path.
            string targetPath = Path.IsPathRooted(target) ? target : Path.Combine(current, target);
            root = Path.GetPathRoot(targetPath)!;
            pending = new Queue<string>(Components(targetPath, root).Concat(pending));
            current = root;
        }
        return current.Length > root.Length ? Path.TrimEndingDirectorySeparator(current) : current;
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="folder"/> or lies anywhere below it (both canonical).</summary>
    public static bool IsSameOrInside(string path, string folder)
    {
        if (string.Equals(path, folder, Comparison)) return true;
        string prefix = Path.EndsInDirectorySeparator(folder) ? folder : folder + Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, Comparison);
    }

    private static IEnumerable<string> Components(string absolute, string root) =>
        absolute[root.Length..].Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);
}
