namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// A plain torch tensor that belongs to someone else (a compute result, a staging buffer), seen as a tiered tensor so
/// it can be a copy's source or destination. Disposing the wrapper leaves the tensor alone.
/// </summary>
internal sealed class BorrowedTensor : TieredTensor
{
    private static readonly BorrowedTier CpuTier = new(TierKind.Cpu);
    private static readonly BorrowedTier GpuTier = new(TierKind.Gpu);

    private BorrowedTensor(MemoryTier tier, torch.Tensor data, string name)
        : base(tier, data.shape, data.dtype, name)
    {
        Data = data;
    }

    public torch.Tensor Data { get; }

    public static BorrowedTensor Wrap(torch.Tensor data, string name = "torch tensor") =>
        new(data.device_type == DeviceType.CPU ? CpuTier : GpuTier, data, name);

    protected override void ReleaseResources()
    {
    }

    private sealed class BorrowedTier(TierKind kind) : MemoryTier(kind == TierKind.Cpu ? "borrowed-cpu" : "borrowed-gpu", kind, long.MaxValue)
    {
        public override TieredTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null) =>
            throw new NotSupportedException("Borrowed tensors are not allocated by a tier.");
    }
}
