namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// Copies between plain tensors, neither mixed nor compressed: in memory (a <see cref="DeviceTensor"/>'s or
/// <see cref="BorrowedTensor"/>'s torch tensor) or in a <see cref="DiskTensor"/>'s file. The per-tier-pair steps
/// <see cref="TierCopy.Dispatch"/> routes to (for checked regions of equal extents), and the disk side of
/// <see cref="TierCopy.GatherPositions"/>.
/// </summary>
internal static class PlainCopy
{
    public static void DeviceToDevice(torch.Tensor dst, Region dstRegion, torch.Tensor src, Region srcRegion)
    {
        if (dstRegion.IsWhole && srcRegion.IsWhole)
        {
            dst.copy_(src);
            return;
        }

        using var dstView = dst.index(dstRegion.ToIndices());
        using var srcView = src.index(srcRegion.ToIndices());
        dstView.copy_(srcView);
    }

    /// <summary>The source box as a contiguous CPU tensor: the source itself when it already is one, else a staged copy.</summary>
    private static (torch.Tensor Staged, bool Owned) StageOnCpu(torch.Tensor src, Region srcRegion)
    {
        if (srcRegion.IsWhole && src.device_type == DeviceType.CPU && src.is_contiguous())
        {
            return (src, false);
        }

        using var view = srcRegion.IsWhole ? src.alias() : src.index(srcRegion.ToIndices());
        var staged = torch.empty(srcRegion.Lengths, src.dtype, torch.CPU).DetachFromDisposeScope();
        staged.copy_(view);
        return (staged, true);
    }

    public static unsafe void MemoryToDisk(DiskTensor dst, Region dstRegion, torch.Tensor src, Region srcRegion)
    {
        var (staged, owned) = StageOnCpu(src, srcRegion);
        try
        {
            dst.WriteRegion(dstRegion, TensorMemory.Pointer(staged));
        }
        finally
        {
            if (owned)
            {
                staged.Dispose();
            }
        }
    }

    public static unsafe void DiskToMemory(torch.Tensor dst, Region dstRegion, DiskTensor src, Region srcRegion)
    {
        // Straight into the destination when its box is one contiguous CPU run; otherwise via a staging tensor.
        var runs = dstRegion.ByteRuns(TensorShapes.ElementSize(src.Dtype));
        if (dst.device_type == DeviceType.CPU && dst.is_contiguous() && runs.Count == 1)
        {
            src.ReadRegion(srcRegion, TensorMemory.Pointer(dst) + runs[0].Offset);
            return;
        }

        using var staged = torch.empty(srcRegion.Lengths, src.Dtype, torch.CPU).DetachFromDisposeScope();
        src.ReadRegion(srcRegion, TensorMemory.Pointer(staged));
        using var dstView = dst.index(dstRegion.ToIndices());
        dstView.copy_(staged);
    }

    public static unsafe void DiskToDisk(DiskTensor dst, Region dstRegion, DiskTensor src, Region srcRegion)
    {
        using var staged = torch.empty(srcRegion.Lengths, src.Dtype, torch.CPU).DetachFromDisposeScope();
        var pointer = TensorMemory.Pointer(staged);
        src.ReadRegion(srcRegion, pointer);
        dst.WriteRegion(dstRegion, pointer);
    }

    /// <summary>
    /// <see cref="TierCopy.GatherPositions"/> from a disk tensor (positions checked): the chosen rows read as merged byte
    /// runs into a CPU tensor, moved to <paramref name="device"/> when it is not the CPU.
    /// </summary>
    public static unsafe torch.Tensor GatherFromDisk(DiskTensor src, torch.Tensor positions, torch.Device device)
    {
        long rows = src.Shape[1], width = src.Shape[2], picks = positions.shape[0];
        long rowBytes = width * TensorShapes.ElementSize(src.Dtype);
        long[] chosen;
        using (torch.NewDisposeScope())
        {
            chosen = positions.to(torch.CPU).contiguous().data<long>().ToArray();
        }

        // In result order (j, r); neighbouring rows of one position are adjacent in the file too, so they merge.
        var runs = new List<(long Offset, long Length)>();
        for (long j = 0; j < picks; j++)
        {
            for (long r = 0; r < rows; r++)
            {
                long offset = (chosen[j * rows + r] * rows + r) * rowBytes;
                if (runs.Count > 0 && runs[^1].Offset + runs[^1].Length == offset)
                {
                    runs[^1] = (runs[^1].Offset, runs[^1].Length + rowBytes);
                }
                else
                {
                    runs.Add((offset, rowBytes));
                }
            }
        }

        var staged = torch.empty([picks, rows, width], src.Dtype, torch.CPU).DetachFromDisposeScope();
        try
        {
            src.ReadRuns(runs, (byte*)TensorMemory.Pointer(staged));
            if (device.type == DeviceType.CPU)
            {
                return staged;
            }

            using (staged)
            {
                return staged.to(device).DetachFromDisposeScope();
            }
        }
        catch
        {
            staged.Dispose();
            throw;
        }
    }
}
