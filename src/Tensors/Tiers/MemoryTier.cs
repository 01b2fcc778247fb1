namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// One place tensors can live (FlexGen's <c>TorchDevice</c> / <c>TorchDisk</c> / <c>TorchMixedDevice</c> /
/// <c>TorchCompressedDevice</c>), with its own capacity budget and accounting. Disposing a tier frees nothing
/// its tensors' owners still hold, except disk files, which the disk tier deletes.
/// </summary>
public abstract class MemoryTier : IDisposable
{
    protected MemoryTier(string name, TierType kind, long capacityBytes)
    {
        Name = name;
        Kind = kind;
        Accounting = new TierAccounting(name, capacityBytes);
    }

    /// <summary>"gpu", "cpu", "disk", "mixed", "compressed(cpu)", ...</summary>
    public string Name { get; }

    public TierType Kind { get; }

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
