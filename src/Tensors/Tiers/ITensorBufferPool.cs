namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// Buffers on one tier reused across copies instead of allocated each time (fresh large tensors page-fault their memory
/// in): the engine's streamed-weight pool, which also stages what <see cref="TierCopy.CopyAs(IReadOnlyList{ValueTuple{DeviceTensor, TieredTensor}}, ITensorBufferPool?)"/>
/// reads in another dtype.
/// </summary>
public interface ITensorBufferPool
{
    /// <summary>An idle buffer of <paramref name="shape"/> and <paramref name="dtype"/>, or a new one; its contents are stale.</summary>
    DeviceTensor Rent(IReadOnlyList<long> shape, torch.ScalarType dtype);

    /// <summary>Takes back what <see cref="Rent"/> handed out.</summary>
    void Return(TieredTensor? tensor);
}
