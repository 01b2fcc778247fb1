namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// The one way data moves between tiers (FlexGen's <c>general_copy</c>): <c>dst[dstRanges] = src[srcRanges]</c> for any
/// two tiered tensors, plain, mixed or compressed, done on the calling thread when the call returns (a large disk
/// transfer also fans its chunks out to the disk tier's I/O threads, and waits for them). Usable from any thread; the
/// caller keeps both tensors alive until it returns. <see cref="Dispatch"/> routes each copy to
/// <see cref="PlainCopy"/> or <see cref="CompressedCopy"/>, per mixed segment.
/// </summary>
public static unsafe class TierCopy
{
    /// <summary><c>dst[dstRanges] = src[srcRanges]</c>, done when it returns. Null ranges mean the whole tensor.</summary>
    public static void Copy(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, TieredTensor src, IReadOnlyList<IndexRange>? srcRanges)
    {
        dst.ThrowIfDisposed();
        src.ThrowIfDisposed();
        var dstRegion = Region.Resolve(dst, dstRanges, "destination");
        var srcRegion = Region.Resolve(src, srcRanges, "source");
        if (!dstRegion.Lengths.AsSpan().SequenceEqual(srcRegion.Lengths))
        {
            throw new ArgumentException(
                $"Copy of '{src.Name}'[{string.Join(", ", srcRegion.ToRanges())}] (extents {TensorShapes.Format(srcRegion.Lengths)}) into " +
                $"'{dst.Name}'[{string.Join(", ", dstRegion.ToRanges())}] (extents {TensorShapes.Format(dstRegion.Lengths)}): the extents differ.");
        }

        if (dst.Dtype != src.Dtype)
        {
            throw new ArgumentException($"Copy of '{src.Name}' ({src.Dtype}) into '{dst.Name}' ({dst.Dtype}): element types differ; tiers copy bytes, they do not convert.");
        }

        Dispatch(dst, dstRegion, src, srcRegion);
    }

    /// <summary><c>dst = src</c> (same shape).</summary>
    public static void Copy(TieredTensor dst, TieredTensor src) => Copy(dst, null, src, null);

    /// <summary>A new tensor on <paramref name="tier"/> holding <c>src[srcRanges]</c>; the caller owns it (freed here when the copy fails).</summary>
    public static TieredTensor CopyTo(TieredTensor src, MemoryTier tier, IReadOnlyList<IndexRange>? srcRanges = null, string? name = null)
    {
        var region = Region.Resolve(src, srcRanges, "source");
        var dst = tier.Allocate(region.Lengths, src.Dtype, name ?? src.Name);
        try
        {
            Copy(dst, null, src, srcRanges);
            return dst;
        }
        catch
        {
            dst.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <c>dst = src</c> converted to <paramref name="dst"/>'s dtype (the one place a tier transfer converts: a weight
    /// streamed to the compute tier in the compute dtype, once per load, into a buffer the caller may reuse across
    /// loads). The same as <see cref="Copy(TieredTensor, TieredTensor)"/> when the dtypes agree. Into CPU memory the
    /// conversion is left to the returned <see cref="DeferredConversion"/>, for whoever uses <paramref name="dst"/> to run
    /// on its own threads before it does: a source in memory is converted from where it is, any other is first read in
    /// its own dtype into a staging buffer (rented from <paramref name="staging"/>, or made and freed here when none is
    /// given). Into CUDA memory it is converted at once (empty result).
    /// </summary>
    public static DeferredConversion CopyAs(DeviceTensor dst, TieredTensor src, ITensorBufferPool? staging = null) =>
        CopyAs([(dst, src)], staging);

    /// <summary>
    /// <see cref="CopyAs(DeviceTensor, TieredTensor, ITensorBufferPool?)"/> for several pairs at once (a layer's weights):
    /// one <see cref="DeferredConversion"/> for them all. Their reads from the disk tier run side by side
    /// (<see cref="ReadSideBySide"/>). When a read fails, what was staged is given back and the failure thrown.
    /// </summary>
    public static DeferredConversion CopyAs(IReadOnlyList<(DeviceTensor Destination, TieredTensor Source)> copies, ITensorBufferPool? staging = null)
    {
        ArgumentNullException.ThrowIfNull(copies);
        var conversion = new DeferredConversion();
        var diskReads = new List<(DeviceTensor Into, DiskTensor From)>();
        try
        {
            foreach (var (dst, src) in copies)
            {
                ArgumentNullException.ThrowIfNull(dst);
                ArgumentNullException.ThrowIfNull(src);
                if (src.Dtype == dst.Dtype)
                {
                    // Into CUDA memory the copy stays on this thread, whose CUDA stream it must run on.
                    if (src is DiskTensor disk && dst.Tier.Device.type == DeviceType.CPU) diskReads.Add((dst, disk));
                    else Copy(dst, src);
                    continue;
                }

                if (src is CompressedTensor)
                {
                    throw new ArgumentException(
                        $"Converting copy of '{src.Name}' ({src.Dtype}) to {dst.Dtype} on {dst.Tier.Name}: only plain tensors convert, into device memory.");
                }

                src.ThrowIfDisposed();
                dst.ThrowIfDisposed();
                if (!src.ShapeArray.AsSpan().SequenceEqual(dst.ShapeArray))
                {
                    throw new ArgumentException(
                        $"Converting copy of '{src.Name}' {TensorShapes.Format(src.ShapeArray)} into '{dst.Name}' {TensorShapes.Format(dst.ShapeArray)}: the shapes differ.");
                }

                if (dst.Tier.Device.type != DeviceType.CPU)
                {
                    ConvertNow(dst, src);
                }
                else if (src is DeviceTensor { Data.device_type: DeviceType.CPU } memory)
                {
                    conversion.Add(dst, memory, release: null);
                }
                else
                {
                    Action<DeviceTensor> release = staging is null ? tensor => tensor.Dispose() : staging.Return;
                    var staged = staging?.Rent(src.ShapeArray, src.Dtype) ?? dst.Tier.Allocate(src.ShapeArray, src.Dtype, $"{src.Name} (staged)");
                    // Held by the conversion from here on, so a failed read gives it back with the rest.
                    conversion.Add(dst, staged, release);
                    if (src is DiskTensor disk) diskReads.Add((staged, disk));
                    else Copy(staged, src);
                }
            }

            ReadSideBySide(diskReads);
        }
        catch
        {
            conversion.Dispose();
            throw;
        }

        return conversion;
    }

    /// <summary>
    /// Reads disk tensors into CPU memory, several at once: up to the disk tier's <see cref="DiskTierSettings.ParallelChunks"/>
    /// tensors on the calling thread and its I/O threads, each still cut into chunks. One after another, every tensor no
    /// larger than a chunk left the disk one read deep: OPT-1.3B's 8 MiB attention weights came at 0.94-1.11 GB/s
    /// against its 32 MiB MLP weights' 1.56-1.64, and at 1.40-1.42 side by side (a 2-core VM).
    /// </summary>
    private static void ReadSideBySide(IReadOnlyList<(DeviceTensor Into, DiskTensor From)> reads)
    {
        if (reads.Count == 0) return;
        if (reads.Count == 1)
        {
            Copy(reads[0].Into, reads[0].From);
            return;
        }

        reads[0].From.Tier.RunChunks(reads.Count, i => Copy(reads[i].Into, reads[i].From));
    }

    // Into CUDA memory: libtorch's copy_ converts as it copies.
    private static void ConvertNow(DeviceTensor dst, TieredTensor src)
    {
        if (src is DeviceTensor plain)
        {
            dst.Data.copy_(plain.Data);
        }
        else
        {
            using var read = ToTorch(src, null, torch.CPU);
            dst.Data.copy_(read);
        }
    }

    /// <summary>
    /// <c>dst</c> = <paramref name="pattern"/> repeated over its elements in order (element e is pattern[e mod n]): a
    /// disk tensor written straight from the pattern, chunk by chunk on the disk tier's I/O threads, with nothing of the
    /// tensor's size made in memory (dummy weights at disk speed). <paramref name="pattern"/> is 1-D, of
    /// <paramref name="dst"/>'s dtype, at most its elements, and stays the caller's.
    /// </summary>
    public static void FillTiled(DiskTensor dst, torch.Tensor pattern)
    {
        ArgumentNullException.ThrowIfNull(dst);
        ArgumentNullException.ThrowIfNull(pattern);
        if (pattern.dtype != dst.Dtype || pattern.dim() != 1)
        {
            throw new ArgumentException($"A tile for '{dst.Name}' ({dst.Dtype}) must be 1-D {dst.Dtype}, got {pattern.dtype} {TensorShapes.Format(pattern.shape)}.", nameof(pattern));
        }

        using var staged = pattern.device_type == DeviceType.CPU ? pattern.contiguous() : pattern.cpu();
        dst.WriteTiled(TensorMemory.Pointer(staged), staged.NumberOfElements * TensorShapes.ElementSize(dst.Dtype));
    }

    /// <summary>
    /// <c>dst[dstRanges] = source</c> from a plain torch tensor (e.g. a compute result, which stays the caller's), on
    /// any device; compresses when <paramref name="dst"/> is compressed.
    /// </summary>
    public static void CopyFrom(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, torch.Tensor source)
    {
        using var wrapper = BorrowedTensor.Wrap(source);
        Copy(dst, dstRanges, wrapper, null);
    }

    /// <summary>
    /// <c>src[srcRanges]</c> as a new plain torch tensor on <paramref name="device"/> (decompressed when the source is
    /// compressed), owned by the caller and detached from any dispose scope.
    /// </summary>
    public static torch.Tensor ToTorch(TieredTensor src, IReadOnlyList<IndexRange>? srcRanges, torch.Device device)
    {
        var region = Region.Resolve(src, srcRanges, "source");
        var result = torch.empty(region.Lengths, src.Dtype, device).DetachFromDisposeScope();
        try
        {
            using var wrapper = BorrowedTensor.Wrap(result);
            Copy(wrapper, null, src, srcRanges);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rows of a (seq, rows, d) cache tensor at chosen positions, one per (position choice, row): the result (k, rows, d)
    /// holds <c>src[positions[j, r], r, :]</c>, a new plain tensor on <paramref name="device"/> owned by the caller (FlexGen's
    /// <c>general_copy(v_buf, ..., v_home, topk_indices)</c> in sparse attention). Only those rows are read: an index gather
    /// in memory, positional reads of d contiguous elements each on disk, per segment for mixed tensors.
    /// <paramref name="positions"/> is (k, rows) int64 on any device, each in [0, seq).
    /// </summary>
    /// <exception cref="NotSupportedException"><paramref name="src"/> is compressed: its rows are stored in quantization
    /// groups, so a caller loads (and decompresses) the whole range instead.</exception>
    public static torch.Tensor GatherPositions(TieredTensor src, torch.Tensor positions, torch.Device device)
    {
        ArgumentNullException.ThrowIfNull(src);
        ArgumentNullException.ThrowIfNull(positions);
        src.ThrowIfDisposed();
        if (src.Rank != 3 || positions.dim() != 2 || positions.shape[1] != src.Shape[1])
        {
            throw new ArgumentException(
                $"GatherPositions takes a (seq, rows, d) tensor and (k, rows) positions; got '{src.Name}' {TensorShapes.Format(src.ShapeArray)} and positions {TensorShapes.Format(positions.shape)}.",
                nameof(positions));
        }

        if (positions.dtype != torch.ScalarType.Int64)
        {
            throw new ArgumentException($"GatherPositions positions must be int64, got {positions.dtype}.", nameof(positions));
        }

        long seq = src.Shape[0], rows = src.Shape[1], picks = positions.shape[0];
        if (positions.numel() > 0)
        {
            using var min = positions.min();
            using var max = positions.max();
            long lowest = min.item<long>(), highest = max.item<long>();
            if (lowest < 0 || highest >= seq)
            {
                throw new ArgumentOutOfRangeException(nameof(positions), $"positions [{lowest}, {highest}] lie outside the {seq} positions of '{src.Name}'.");
            }
        }

        switch (src)
        {
            case DeviceTensor or BorrowedTensor:
            {
                using var scope = torch.NewDisposeScope();
                var data = PlainData(src);
                // Element (j, r) picks data[positions[j, r], r, :], whatever the home's strides (a reshape of a row-major
                // cache home would copy all of it).
                var rowIndex = torch.arange(rows, device: data.device).view(1, rows).expand(picks, rows);
                var gathered = data.index(torch.TensorIndex.Tensor(positions.to(data.device)), torch.TensorIndex.Tensor(rowIndex)).to(device); // (picks, rows, d)
                return gathered.contiguous().DetachFromDisposeScope();
            }

            case DiskTensor disk:
                return PlainCopy.GatherFromDisk(disk, positions, device);
            case MixedTensor mixed:
            {
                using var scope = torch.NewDisposeScope();
                // Each part comes back detached from this scope: freed here once concatenated.
                var parts = new List<torch.Tensor>(mixed.Segments.Count);
                try
                {
                    for (var i = 0; i < mixed.Segments.Count; i++)
                    {
                        var segment = mixed.Segments[i];
                        var segmentRows = segment.Shape[MixedTier.SplitDim];
                        parts.Add(GatherPositions(segment, positions.narrow(1, mixed.SegmentStarts[i], segmentRows).contiguous(), device));
                    }

                    return torch.cat(parts, 1).DetachFromDisposeScope();
                }
                finally
                {
                    foreach (var part in parts)
                    {
                        part.Dispose();
                    }
                }
            }

            case CompressedTensor:
                throw new NotSupportedException(
                    $"'{src.Name}' is compressed: its rows are stored in quantization groups, so gathering rows by position is not supported; load the range whole.");
            default:
                throw new NotSupportedException($"No row gather from {src.GetType().Name}.");
        }
    }

    /// <summary><c>dst[dstRegion] = src[srcRegion]</c> for checked regions of equal extents (also the compressed copies' inner steps).</summary>
    internal static void Dispatch(TieredTensor dst, Region dstRegion, TieredTensor src, Region srcRegion)
    {
        if (dstRegion.ElementCount == 0)
        {
            return;
        }

        switch (dst, src)
        {
            case (CompressedTensor, _) or (_, CompressedTensor):
                CompressedCopy.Run(dst, dstRegion, src, srcRegion);
                break;
            case (MixedTensor mixed, _):
                ForEachSegment(mixed, dstRegion, srcRegion, (segment, segmentRegion, otherRegion) => Dispatch(segment, segmentRegion, src, otherRegion));
                break;
            case (_, MixedTensor mixed):
                ForEachSegment(mixed, srcRegion, dstRegion, (segment, segmentRegion, otherRegion) => Dispatch(dst, otherRegion, segment, segmentRegion));
                break;
            case (DeviceTensor or BorrowedTensor, DeviceTensor or BorrowedTensor):
                PlainCopy.DeviceToDevice(PlainData(dst), dstRegion, PlainData(src), srcRegion);
                break;
            case (DiskTensor d, DiskTensor s):
                PlainCopy.DiskToDisk(d, dstRegion, s, srcRegion);
                break;
            case (DiskTensor d, _):
                PlainCopy.MemoryToDisk(d, dstRegion, PlainData(src), srcRegion);
                break;
            case (_, DiskTensor s):
                PlainCopy.DiskToMemory(PlainData(dst), dstRegion, s, srcRegion);
                break;
            default:
                throw new NotSupportedException($"No copy from {src.GetType().Name} to {dst.GetType().Name}.");
        }
    }

    internal static torch.Tensor PlainData(TieredTensor tensor) => tensor switch
    {
        DeviceTensor device => device.Data,
        BorrowedTensor borrowed => borrowed.Data,
        _ => throw new NotSupportedException($"'{tensor.Name}' on {tensor.Tier.Name} is not held in memory."),
    };

    /// <summary>Splits a copy that touches a mixed tensor into one copy per segment it overlaps, one after another.</summary>
    private static void ForEachSegment(MixedTensor mixed, Region mixedRegion, Region otherRegion, Action<TieredTensor, Region, Region> copy)
    {
        const int dim = MixedTier.SplitDim;
        var start = mixedRegion.Starts[dim];
        var stop = start + mixedRegion.Lengths[dim];
        for (var i = 0; i < mixed.Segments.Count; i++)
        {
            var segment = mixed.Segments[i];
            var segmentStart = mixed.SegmentStarts[i];
            var segmentStop = segmentStart + segment.Shape[dim];
            var lo = Math.Max(start, segmentStart);
            var hi = Math.Min(stop, segmentStop);
            if (lo >= hi)
            {
                continue;
            }

            var segmentRegion = mixedRegion.With(dim, lo - segmentStart, hi - lo).On(segment.ShapeArray);
            var other = otherRegion.With(dim, otherRegion.Starts[dim] + (lo - start), hi - lo);
            copy(segment, segmentRegion, other);
        }
    }
}
