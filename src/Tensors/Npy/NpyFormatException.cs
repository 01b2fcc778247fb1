namespace FlexGen.Tensors.Npy;

/// <summary>
/// A .npy / .npz file that cannot be read as a tensor: bad magic, bad header, unsupported dtype or
/// order, a size that does not match the header, or a truncated file. The message names the file.
/// </summary>
public sealed class NpyFormatException : IOException
{
    public NpyFormatException(string filePath, string problem, Exception? inner = null)
        : base($"{filePath}: {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file (for .npz entries: <c>archive.npz!entry.npy</c>).</summary>
    public string FilePath { get; }

    /// <summary>What is wrong, without the file name.</summary>
    public string Problem { get; }
}
