namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// A tensor whose bytes live on one <see cref="MemoryTier"/> (FlexGen's <c>TorchTensor</c>). Its owner disposes it;
/// disposing frees the memory or deletes the file and returns the bytes to the tier's accounting. Data moves
/// between tiers only through <see cref="TierCopy"/>.
/// </summary>
public abstract class TieredTensor : IDisposable
{
    private readonly long[] _shape;
    private int _disposed;

    protected TieredTensor(MemoryTier tier, ReadOnlySpan<long> shape, torch.ScalarType dtype, string name)
    {
        foreach (var extent in shape)
        {
            if (extent < 0)
            {
                throw new ArgumentException($"Tensor '{name}' has a negative extent in shape [{string.Join(", ", shape.ToArray())}].", nameof(shape));
            }
        }

        Tier = tier;
        _shape = shape.ToArray();
        Dtype = dtype;
        Name = name;
        ElementCount = TensorShapes.ElementCount(_shape);
        Bytes = ElementCount * TensorShapes.ElementSize(dtype);
    }

    /// <summary>The tier that owns the bytes.</summary>
    public MemoryTier Tier { get; }

    /// <summary>The physical tier holding the bytes (null for a mixed tensor: see its segments).</summary>
    public TierKind? Home => Tier.Home;

    /// <summary>The logical shape (for compressed tensors: the uncompressed shape).</summary>
    public IReadOnlyList<long> Shape => _shape;

    /// <summary>The logical element type (for compressed tensors: the uncompressed type).</summary>
    public torch.ScalarType Dtype { get; }

    public string Name { get; }

    public long ElementCount { get; }

    /// <summary>Uncompressed size in bytes: elements x element size.</summary>
    public long Bytes { get; }

    public int Rank => _shape.Length;

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    internal long[] ShapeArray => _shape;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            ReleaseResources();
            GC.SuppressFinalize(this);
        }
    }

    public override string ToString() => $"{Name} [{string.Join(", ", _shape)}] {Dtype} on {Tier.Name}";

    internal void ThrowIfDisposed()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, $"tensor '{Name}' on tier '{Tier.Name}'");
    }

    /// <summary>Frees the memory or file and returns the bytes to the tier; called once.</summary>
    protected abstract void ReleaseResources();
}
