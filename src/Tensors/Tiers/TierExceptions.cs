namespace FlexGen.Tensors.Tiers;

/// <summary>An allocation would take a tier past its capacity budget.</summary>
public sealed class TierBudgetExceededException(string tier, string? tensorName, long requestedBytes, long currentBytes, long capacityBytes)
    : InvalidOperationException(
        $"Tier '{tier}' cannot hold {requestedBytes:N0} more bytes for tensor '{tensorName ?? "(unnamed)"}': " +
        $"{currentBytes:N0} of its {capacityBytes:N0}-byte capacity are in use.")
{
    public string Tier { get; } = tier;
    public string? TensorName { get; } = tensorName;
    public long RequestedBytes { get; } = requestedBytes;
    public long CurrentBytes { get; } = currentBytes;
    public long CapacityBytes { get; } = capacityBytes;
}

/// <summary>The offload directory is missing, is not a directory, or cannot be written.</summary>
public sealed class OffloadDirectoryException(string directory, string problem, Exception? inner = null)
    : IOException($"Offload directory '{directory}' {problem}.", inner)
{
    public string Directory { get; } = directory;
}

/// <summary>A disk-tier read or write failed (disk full, file too large, I/O error), naming the file.</summary>
public sealed class DiskTierIOException(string path, string operation, int errno, string detail)
    : IOException($"Disk tier {operation} of '{path}' failed: {detail} (errno {errno}).")
{
    public string Path { get; } = path;
    public int Errno { get; } = errno;

    /// <summary>True when the device or the file-size limit ran out of space (ENOSPC, EFBIG, EDQUOT).</summary>
    public bool IsOutOfSpace => Errno is 28 or 27 or 122;
}
