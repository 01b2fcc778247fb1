namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// One place tensors can live (FlexGen's <c>TorchDevice</c> / <c>TorchDisk</c> / <c>TorchMixedDevice</c> /
/// <c>TorchCompressedDevice</c>), with its own capacity budget and accounting. Disposing a tier frees nothing
/// its tensors' owners still hold, except disk files, which the disk tier deletes.
/// </summary>
public abstract class MemoryTier : IDisposable
{
    protected MemoryTier(string name, TierKind? home, long capacityBytes)
    {
        Name = name;
        Home = home;
        Accounting = new TierAccounting(name, capacityBytes);
    }

    /// <summary>"gpu", "cpu", "disk", "mixed", "compressed(cpu)", ...</summary>
    public string Name { get; }

    /// <summary>
    /// The physical tier that holds this tier's bytes: itself for GPU, CPU and disk, the base tier for a compressed
    /// tier; null for a mixed tier, whose segments lie on several.
    /// </summary>
    public TierKind? Home { get; }

    public TierAccounting Accounting { get; }

    /// <summary>Current and peak bytes, live tensors, capacity.</summary>
    public virtual TierStats Stats => Accounting.Snapshot();

    /// <summary>Allocates an uninitialised tensor of <paramref name="shape"/> and <paramref name="dtype"/> on this tier.</summary>
    /// <exception cref="TierBudgetExceededException">The tier's capacity would be exceeded.</exception>
    public abstract TieredTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null);

    public virtual void Dispose()
    {
        GC.SuppressFinalize(this);
    }

    public override string ToString() => Name;

    private static long _nextTensorId;

    /// <summary>A default name unique in this process.</summary>
    protected static string DefaultName(string prefix) => $"{prefix}-{Interlocked.Increment(ref _nextTensorId)}";
}
