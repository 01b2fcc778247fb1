namespace FlexGen.Host.Checkpoints;

/// <summary>
/// A hidden folder beside a model folder to be written (so on the same file system), renamed into place by
/// <see cref="Commit"/>. Disposed without a commit, it removes itself and the parent folders it created, so a
/// failed or cancelled conversion leaves nothing behind.
/// </summary>
internal sealed class StagingFolder : IDisposable
{
    private readonly string _target;
    /// <summary>The folders above the target this staging created, deepest first.</summary>
    private readonly List<string> _createdParents;
    private bool _committed;

    public string Path { get; }

    private StagingFolder(string target, string path, List<string> createdParents)
    {
        _target = target;
        Path = path;
        _createdParents = createdParents;
    }

    /// <param name="target">Canonical path of the folder to produce; it must not exist or be an empty folder.</param>
    public static StagingFolder Beside(string target)
    {
        string parent = System.IO.Path.GetDirectoryName(target)
            ?? throw new ConversionFolderException(target, "a file-system root cannot be the output folder.");
        var createdParents = new List<string>();
        for (string? folder = parent; folder is not null && !Directory.Exists(folder); folder = System.IO.Path.GetDirectoryName(folder))
            createdParents.Add(folder);
        var staging = new StagingFolder(target, System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(target)}.converting-{Guid.NewGuid():N}"), createdParents);
        try
        {
            Directory.CreateDirectory(staging.Path);
            return staging;
        }
        catch
        {
            staging.Dispose();
            throw;
        }
    }

    /// <summary>Renames the staging folder to the target, replacing the target if it is an empty folder.</summary>
    public void Commit()
    {
        // Directory.Delete refuses a folder that is not empty, so a file someone put there meanwhile is never lost.
        bool replacesEmptyFolder = Directory.Exists(_target);
        if (replacesEmptyFolder) Directory.Delete(_target);
        try
        {
            Directory.Move(Path, _target);
        }
        catch
        {
            if (replacesEmptyFolder) Directory.CreateDirectory(_target);
            throw;
        }
        _committed = true;
    }

    public void Dispose()
    {
        if (_committed) return;
        // Best effort: a cleanup failure must not hide the error that stopped the conversion.
        try
        {
            if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
            foreach (var folder in _createdParents)
                if (Directory.Exists(folder) && !Directory.EnumerateFileSystemEntries(folder).Any()) Directory.Delete(folder);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
