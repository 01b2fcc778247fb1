namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>
/// Copies where either side is compressed (FlexGen's <c>general_copy_compressed</c>, generalised): compressed to
/// compressed with the same settings and whole groups copies packed bytes and scales as they are (exact); otherwise
/// the data goes through a plain tensor on the work device (CUDA when either side is there, else CPU):
/// decompress the covering groups, and/or compress, re-quantizing the groups a destination box cuts.
/// </summary>
internal static class CompressedCopy
{
    public static void Run(TieredTensor dst, Region dstRegion, TieredTensor src, Region srcRegion)
    {
        if (dst is CompressedTensor d && src is CompressedTensor s && SameFormat(d.Config, s.Config) && IsGroupAligned(dstRegion, d.Config)
            && dstRegion.Starts[s.Config.GroupDim] % s.Config.GroupSize == 0)
        {
            CopyGroups(d, dstRegion, s, srcRegion);
            return;
        }

        var device = WorkDevice(dst, src);
        if (src is CompressedTensor compressedSource)
        {
            using var plain = Decompress(compressedSource, srcRegion, device);
            using var wrapper = BorrowedTensor.Wrap(plain);
            TierCopy.Dispatch(dst, dstRegion, wrapper, Region.Resolve(plain.shape, null, "decompressed"));
            return;
        }

        Compress((CompressedTensor)dst, dstRegion, src, srcRegion, device);
    }

    /// <summary>
    /// <c>src[srcRegion]</c> decompressed into a new plain tensor on <paramref name="device"/> (the caller's), reading only
    /// the groups the box touches.
    /// </summary>
    public static torch.Tensor Decompress(CompressedTensor src, Region srcRegion, torch.Device device)
    {
        var config = src.Config;
        var covering = CoveringGroups(srcRegion, config);
        var lengths = covering.Lengths;
        var packedShape = GroupQuantizer.PackedShape(lengths, config);
        var scaleShape = GroupQuantizer.ScaleShape(lengths, config);
        var packed = torch.zeros(packedShape, torch.ScalarType.Byte, device).DetachFromDisposeScope();
        var scale = torch.empty(scaleShape, torch.ScalarType.Float16, device).DetachFromDisposeScope();
        using var quantized = new QuantizedTensor(packed, scale, lengths, config);
        using (var packedWrapper = BorrowedTensor.Wrap(packed))
        using (var scaleWrapper = BorrowedTensor.Wrap(scale))
        {
            var (packedSource, packedTarget) = PackedBoxes(covering, src, packedShape);
            var scaleSource = ScaleBox(covering, src.Scales.ShapeArray, config);
            var scaleTarget = Region.Resolve(scaleShape, null, "scales");
            TierCopy.Dispatch(packedWrapper, packedTarget, src.Packed, packedSource);
            TierCopy.Dispatch(scaleWrapper, scaleTarget, src.Scales, scaleSource);
        }

        using var decompressed = GroupQuantizer.Decompress(quantized, src.Dtype);
        using var box = decompressed.index(srcRegion.RelativeTo(covering).ToIndices());
        // A new handle either way (a copy, or a contiguous view that keeps the storage alive after decompressed goes).
        return box.contiguous().DetachFromDisposeScope();
    }

    /// <summary><c>dst[dstRegion] = compress(src[srcRegion])</c>; cut groups at the box's edges are decompressed, patched and re-compressed.</summary>
    private static void Compress(CompressedTensor dst, Region dstRegion, TieredTensor src, Region srcRegion, torch.Device device)
    {
        var config = dst.Config;
        torch.Tensor plain;
        Region target;
        if (IsGroupAligned(dstRegion, config))
        {
            plain = Plain(src, srcRegion, device);
            target = dstRegion;
        }
        else
        {
            // Read-modify-write of the groups the box cuts.
            target = CoveringGroups(dstRegion, config);
            plain = Decompress(dst, target, device);
            try
            {
                var inner = dstRegion.RelativeTo(target);
                using var plainWrapper = BorrowedTensor.Wrap(plain);
                TierCopy.Dispatch(plainWrapper, inner, src, srcRegion);
            }
            catch
            {
                plain.Dispose();
                throw;
            }
        }

        using (plain)
        using (var quantized = GroupQuantizer.Compress(plain, config, dst.Tier.Arithmetic))
        {
            quantized.Packed.DetachFromDisposeScope();
            quantized.Scale.DetachFromDisposeScope();
            using var packedWrapper = BorrowedTensor.Wrap(quantized.Packed);
            using var scaleWrapper = BorrowedTensor.Wrap(quantized.Scale);
            var packedSourceShape = quantized.Packed.shape;
            var (packedTarget, packedSource) = PackedBoxes(target, dst, packedSourceShape);
            var scaleTarget = ScaleBox(target, dst.Scales.ShapeArray, config);
            TierCopy.Dispatch(dst.Packed, packedTarget, packedWrapper, packedSource);
            TierCopy.Dispatch(dst.Scales, scaleTarget, scaleWrapper, Region.Resolve(quantized.Scale.shape, null, "scales"));
        }
    }

    /// <summary>Whole groups from one compressed tensor to another with the same settings: packed bytes and scales as they are.</summary>
    private static void CopyGroups(CompressedTensor dst, Region dstRegion, CompressedTensor src, Region srcRegion)
    {
        var config = dst.Config;
        var (dstPacked, _) = PackedBoxes(dstRegion, dst, dst.Packed.ShapeArray);
        var (srcPacked, _) = PackedBoxes(srcRegion, src, src.Packed.ShapeArray);
        var dstScale = ScaleBox(dstRegion, dst.Scales.ShapeArray, config);
        var srcScale = ScaleBox(srcRegion, src.Scales.ShapeArray, config);
        TierCopy.Dispatch(dst.Packed, dstPacked, src.Packed, srcPacked);
        TierCopy.Dispatch(dst.Scales, dstScale, src.Scales, srcScale);
    }

    /// <summary><c>src[srcRegion]</c> as a new contiguous plain tensor on <paramref name="device"/>.</summary>
    private static torch.Tensor Plain(TieredTensor src, Region srcRegion, torch.Device device)
    {
        var plain = torch.empty(srcRegion.Lengths, src.Dtype, device).DetachFromDisposeScope();
        try
        {
            using var wrapper = BorrowedTensor.Wrap(plain);
            TierCopy.Dispatch(wrapper, Region.Resolve(plain.shape, null, "staging"), src, srcRegion);
            return plain;
        }
        catch
        {
            plain.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The box of the packed data holding a box of whole groups (in the tensor of <paramref name="packedShape"/>), and the
    /// matching box at the start of a packed buffer of <paramref name="packedShape"/> for the box alone.
    /// </summary>
    private static (Region InTensor, Region InBuffer) PackedBoxes(Region box, TieredTensor owner, long[] packedShape)
    {
        var gd = ((CompressedTier)owner.Tier).Config.GroupDim;
        var start = box.Starts[gd] / 2;
        var length = (box.Starts[gd] + box.Lengths[gd] + 1) / 2 - start;
        var ownerPackedShape = ((CompressedTensor)owner).Packed.ShapeArray;
        var inTensor = box.With(gd, start, length).On(ownerPackedShape);
        var inBuffer = Region.Resolve(packedShape, null, "packed").With(gd, 0, length);
        for (var d = 0; d < box.Rank; d++)
        {
            if (d != gd)
            {
                inBuffer = inBuffer.With(d, 0, box.Lengths[d]);
            }
        }

        return (inTensor, inBuffer);
    }

    /// <summary>The box of the scales (group dim -> group range, then (0, 2)) for a box of whole groups.</summary>
    private static Region ScaleBox(Region box, long[] scaleShape, CompressionConfig config)
    {
        var gd = config.GroupDim;
        var gs = config.GroupSize;
        var ranges = new List<IndexRange>();
        for (var d = 0; d < box.Rank; d++)
        {
            if (d == gd)
            {
                var first = box.Starts[d] / gs;
                var end = (box.Starts[d] + box.Lengths[d] + gs - 1) / gs;
                ranges.Add(new IndexRange(first, end));
                ranges.Add(new IndexRange(0, 2));
            }
            else
            {
                ranges.Add(new IndexRange(box.Starts[d], box.Starts[d] + box.Lengths[d]));
            }
        }

        return Region.Resolve(scaleShape, ranges, "scales");
    }

    /// <summary>The box widened along the group dim to whole groups (the last one ends at the tensor's end).</summary>
    private static Region CoveringGroups(Region box, CompressionConfig config)
    {
        var gd = config.GroupDim;
        var gs = config.GroupSize;
        var start = box.Starts[gd] / gs * gs;
        var stop = Math.Min((box.Starts[gd] + box.Lengths[gd] + gs - 1) / gs * gs, box.Shape[gd]);
        return box.With(gd, start, stop - start);
    }

    /// <summary>True when the box starts on a group and ends on a group or at the tensor's end (no group is cut).</summary>
    private static bool IsGroupAligned(Region box, CompressionConfig config)
    {
        var gd = config.GroupDim;
        var gs = config.GroupSize;
        var stop = box.Starts[gd] + box.Lengths[gd];
        return box.Starts[gd] % gs == 0 && (stop % gs == 0 || stop == box.Shape[gd]);
    }

    private static bool SameFormat(CompressionConfig a, CompressionConfig b) =>
        a.NumBits == b.NumBits && a.GroupSize == b.GroupSize && a.GroupDim == b.GroupDim && a.Symmetric == b.Symmetric;

    private static torch.Device WorkDevice(TieredTensor dst, TieredTensor src) =>
        OnCuda(dst) ? Device(dst) : OnCuda(src) ? Device(src) : torch.CPU;

    private static bool OnCuda(TieredTensor t) => Device(t).type == DeviceType.CUDA;

    private static torch.Device Device(TieredTensor t) => t switch
    {
        DeviceTensor device => device.Data.device,
        BorrowedTensor borrowed => borrowed.Data.device,
        CompressedTensor compressed => Device(compressed.Packed),
        _ => torch.CPU,
    };
}
