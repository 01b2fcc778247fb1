namespace FlexGen.Host.Tests;

using System.Security.Cryptography;

/// <summary>Every entry below a folder with what it holds (file bytes hashed, links by target), to show that nothing changed.</summary>
public static class FolderSnapshot
{
    public static SortedDictionary<string, string> Of(string folder)
    {
        var entries = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var info in new DirectoryInfo(folder).EnumerateFileSystemInfos("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            string name = Path.GetRelativePath(folder, info.FullName);
            entries[name] = info.LinkTarget is { } target ? "link to " + target
                : info is FileInfo file ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file.FullName)))
                : "folder";
        }
        return entries;
    }

    /// <summary>The names directly in a folder, sorted.</summary>
    public static string[] Names(string folder) =>
        Directory.EnumerateFileSystemEntries(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;
}
