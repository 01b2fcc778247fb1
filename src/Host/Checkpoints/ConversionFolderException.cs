namespace FlexGen.Host.Checkpoints;

/// <summary>
/// A conversion refused before it starts because of where it would write: into the checkpoint, around it, over a
/// file or into a folder that already holds files. The message names the folder and the rule.
/// </summary>
public sealed class ConversionFolderException(string folder, string problem)
    : Exception($"{folder}: {problem}")
{
    public string Folder { get; } = folder;
}
