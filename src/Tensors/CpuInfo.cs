namespace FlexGen.Tensors;

/// <summary>
/// <c>/proc/cpuinfo</c>, read in one place: its text, and the first processor's line or value of a field (the
/// fields the engine asks for, vendor, model name and flags, are the same for every processor of a machine).
/// </summary>
public static class CpuInfo
{
    private const string PathName = "/proc/cpuinfo";

    /// <summary>The file's text, or null where there is none or it cannot be read (not Linux, no permission).</summary>
    public static string? Read() => KernelFile.Read(PathName);

    /// <summary>The first line of <paramref name="cpuinfo"/> that starts with <paramref name="field"/>, or null.</summary>
    public static string? Line(string cpuinfo, string field)
    {
        ArgumentNullException.ThrowIfNull(cpuinfo);
        foreach (var line in cpuinfo.Split('\n'))
        {
            if (line.StartsWith(field, StringComparison.Ordinal)) return line;
        }

        return null;
    }

    /// <summary>What follows the colon of <see cref="Line"/>, trimmed; null without such a line or colon.</summary>
    public static string? Value(string cpuinfo, string field) =>
        Line(cpuinfo, field) is { } line && line.IndexOf(':') is var colon and >= 0 ? line[(colon + 1)..].Trim() : null;
}
