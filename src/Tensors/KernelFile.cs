namespace FlexGen.Tensors;

/// <summary>
/// The files through which Linux tells what the machine is and does (<c>/proc</c>, <c>/sys</c>), read in one place:
/// where there is no such file (another OS, a container without it) or it cannot be read, a caller falls back, never fails.
/// </summary>
public static class KernelFile
{
    /// <summary>The text of <paramref name="path"/>, or null where it does not exist or cannot be read.</summary>
    public static string? Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
