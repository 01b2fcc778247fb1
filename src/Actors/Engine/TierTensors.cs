namespace FlexGen.Actors.Engine;

using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>Small facts about tier tensors the engine's handlers share.</summary>
internal static class TierTensors
{
    /// <summary>Bytes a tensor occupies where it is stored (compressed ones: packed data and scales).</summary>
    public static long StoredBytes(TieredTensor tensor) => tensor is CompressedTensor c ? c.StoredBytes : tensor.Bytes;

    /// <summary>The physical tier a (possibly compressed) tensor's bytes live on.</summary>
    public static TierKind HomeOf(TieredTensor tensor) =>
        tensor.Home ?? throw new InvalidOperationException($"tensor {tensor.Name} is on {tensor.Tier.Name}, not on one physical tier");

    /// <summary>A plain tensor of <paramref name="source"/>[ranges]: in place for device tensors, decompressed for compressed ones, null for disk.</summary>
    public static Tensor? Plain(TieredTensor source, IndexRange[]? ranges, Device device, List<Tensor> temporaries)
    {
        switch (source)
        {
            case DeviceTensor plain:
                return ranges is null ? plain.Data : plain.Data.narrow(0, ranges[0].Start, ranges[0].Length);
            case CompressedTensor { Tier.Base: DeviceTier } compressed:
                var decompressed = TierCopy.ToTorch(compressed, ranges, device);
                temporaries.Add(decompressed);
                return decompressed;
            default:
                return null;
        }
    }

    /// <summary>
    /// Makes several tier tensors that are stored together: when one cannot be made (e.g. the GPU tier is full), the
    /// ones already made are disposed, so their bytes do not stay booked on the tier with nothing left to free them.
    /// </summary>
    public static DeviceTensor[] AllOrNone(params Func<DeviceTensor>[] makers)
    {
        var made = new List<DeviceTensor>(makers.Length);
        try
        {
            foreach (var make in makers)
            {
                made.Add(make());
            }

            return made.ToArray();
        }
        catch
        {
            DisposeAll(made);
            throw;
        }
    }

    public static void DisposeAll(IEnumerable<IDisposable?> owned)
    {
        foreach (var item in owned)
        {
            item?.Dispose();
        }
    }
}
