namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>A tensor of the disk tier: a raw file, read and written by byte ranges (through <see cref="DiskTransfer"/>).</summary>
public sealed unsafe class DiskTensor : TieredTensor
{
    internal DiskTensor(DiskTier tier, ReadOnlySpan<long> shape, torch.ScalarType dtype, string name, string path, long bookedBytes)
        : base(tier, shape, dtype, name)
    {
        Path = path;
        BookedBytes = bookedBytes;
    }

    public new DiskTier Tier => (DiskTier)base.Tier;

    /// <summary>The file that holds the bytes (deleted on dispose).</summary>
    public string Path { get; }

    internal long BookedBytes { get; }

    /// <summary>Reads the box <paramref name="region"/> into <paramref name="destination"/>, a contiguous buffer of the box's size.</summary>
    internal void ReadRegion(Region region, byte* destination) => DiskTransfer.Transfer(this, region, destination, write: false);

    /// <summary>Writes <paramref name="source"/>, a contiguous buffer of the box's size, into the box <paramref name="region"/>.</summary>
    internal void WriteRegion(Region region, byte* source) => DiskTransfer.Transfer(this, region, source, write: true);

    /// <summary>Writes the whole tensor as <paramref name="pattern"/> (<paramref name="patternBytes"/>) repeated (see <see cref="DiskTransfer.WriteTiled"/>).</summary>
    internal void WriteTiled(byte* pattern, long patternBytes) => DiskTransfer.WriteTiled(this, pattern, patternBytes);

    /// <summary>
    /// Reads the byte runs (file offset, length) one after another into <paramref name="destination"/> (their total size):
    /// positional reads of scattered rows, e.g. the value rows sparse attention picks.
    /// </summary>
    internal void ReadRuns(IReadOnlyList<(long Offset, long Length)> runs, byte* destination) => DiskTransfer.ReadRuns(this, runs, destination);

    protected override void ReleaseResources() => Tier.Forget(this);
}
