namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// The one way data moves between tiers (FlexGen's <c>general_copy</c>): <c>dst[dstRanges] = src[srcRanges]</c> for any
/// two tiered tensors, plain, mixed or compressed, synchronously on the calling thread or awaitably (disk transfers
/// then run on the disk tier's I/O pool). Usable from any thread; the caller keeps both tensors alive until it returns.
/// </summary>
public static class TierCopy
{
    /// <summary><c>dst[dstRanges] = src[srcRanges]</c>, done when it returns. Null ranges mean the whole tensor.</summary>
    public static void Copy(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, TieredTensor src, IReadOnlyList<IndexRange>? srcRanges) =>
        Run(dst, dstRanges, src, srcRanges, async: false, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary><c>dst = src</c> (same shape).</summary>
    public static void Copy(TieredTensor dst, TieredTensor src) => Copy(dst, null, src, null);

    /// <summary>
    /// <c>dst[dstRanges] = src[srcRanges]</c>; disk reads and writes run on the I/O pool and the task completes when all
    /// bytes are in place. GPU/CPU parts run on the calling thread (on its current CUDA stream) before this returns.
    /// </summary>
    public static Task CopyAsync(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, TieredTensor src, IReadOnlyList<IndexRange>? srcRanges, CancellationToken cancellationToken = default) =>
        Run(dst, dstRanges, src, srcRanges, async: true, cancellationToken);

    public static Task CopyAsync(TieredTensor dst, TieredTensor src, CancellationToken cancellationToken = default) =>
        CopyAsync(dst, null, src, null, cancellationToken);

    /// <summary>A new tensor on <paramref name="tier"/> holding <c>src[srcRanges]</c>; the caller owns it.</summary>
    public static TieredTensor CopyTo(TieredTensor src, MemoryTier tier, IReadOnlyList<IndexRange>? srcRanges = null, string? name = null) =>
        CopyToCore(src, tier, srcRanges, name, async: false, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Awaitable <see cref="CopyTo"/>; on failure or cancellation the new tensor is freed.</summary>
    public static Task<TieredTensor> CopyToAsync(TieredTensor src, MemoryTier tier, IReadOnlyList<IndexRange>? srcRanges = null, string? name = null, CancellationToken cancellationToken = default) =>
        CopyToCore(src, tier, srcRanges, name, async: true, cancellationToken);

    /// <summary>
    /// <c>dst[dstRanges] = source</c> from a plain torch tensor (e.g. a compute result, which stays the caller's), on
    /// any device; compresses when <paramref name="dst"/> is compressed.
    /// </summary>
    public static void CopyFrom(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, torch.Tensor source) =>
        CopyFromCore(dst, dstRanges, source, async: false, CancellationToken.None).GetAwaiter().GetResult();

    /// <inheritdoc cref="CopyFrom"/>
    public static Task CopyFromAsync(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, torch.Tensor source, CancellationToken cancellationToken = default) =>
        CopyFromCore(dst, dstRanges, source, async: true, cancellationToken);

    /// <summary>
    /// A new tensor on <paramref name="home"/> holding a copy of <paramref name="source"/> (e.g. hidden states parked at
    /// the activation home, compressed when the home is compressed); the caller owns it, the source stays the caller's.
    /// </summary>
    public static TieredTensor Store(torch.Tensor source, MemoryTier home, string? name = null) =>
        StoreCore(source, home, name, async: false, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Awaitable <see cref="Store"/>; on failure or cancellation the new tensor is freed.</summary>
    public static Task<TieredTensor> StoreAsync(torch.Tensor source, MemoryTier home, string? name = null, CancellationToken cancellationToken = default) =>
        StoreCore(source, home, name, async: true, cancellationToken);

    /// <summary>
    /// The one implementation of <see cref="CopyTo"/> and <see cref="CopyToAsync"/>: with <paramref name="async"/> false
    /// every step runs on the calling thread and the task is complete on return.
    /// </summary>
    internal static async Task<TieredTensor> CopyToCore(TieredTensor src, MemoryTier tier, IReadOnlyList<IndexRange>? srcRanges, string? name, bool async, CancellationToken cancellationToken)
    {
        var region = Region.Resolve(src, srcRanges, "source");
        var dst = tier.Allocate(region.Lengths, src.Dtype, name ?? src.Name);
        try
        {
            await Run(dst, null, src, srcRanges, async, cancellationToken).ConfigureAwait(false);
            return dst;
        }
        catch
        {
            dst.Dispose();
            throw;
        }
    }

    /// <summary>The one implementation of <see cref="CopyFrom"/> and <see cref="CopyFromAsync"/>.</summary>
    internal static async Task CopyFromCore(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, torch.Tensor source, bool async, CancellationToken cancellationToken)
    {
        using var wrapper = BorrowedTensor.Wrap(source);
        await Run(dst, dstRanges, wrapper, null, async, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The one implementation of <see cref="Store"/> and <see cref="StoreAsync"/>.</summary>
    private static async Task<TieredTensor> StoreCore(torch.Tensor source, MemoryTier home, string? name, bool async, CancellationToken cancellationToken)
    {
        var stored = home.Allocate(source.shape, source.dtype, name);
        try
        {
            await CopyFromCore(stored, null, source, async, cancellationToken).ConfigureAwait(false);
            return stored;
        }
        catch
        {
            stored.Dispose();
            throw;
        }
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

        long seq = src.Shape[0], rows = src.Shape[1], width = src.Shape[2], picks = positions.shape[0];
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
                // Row (p, r) is element p * rows + r of the (seq * rows, d) view.
                var flat = positions.to(data.device).mul(rows).add(torch.arange(rows, device: data.device).view(1, rows)).view(-1);
                var gathered = data.reshape(seq * rows, width).index_select(0, flat).view(picks, rows, width).to(device);
                return gathered.contiguous().DetachFromDisposeScope();
            }

            case DiskTensor disk:
                return GatherFromDisk(disk, positions, device);
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

    private static unsafe torch.Tensor GatherFromDisk(DiskTensor src, torch.Tensor positions, torch.Device device)
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

    private static Task Run(TieredTensor dst, IReadOnlyList<IndexRange>? dstRanges, TieredTensor src, IReadOnlyList<IndexRange>? srcRanges, bool async, CancellationToken cancellationToken)
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

        cancellationToken.ThrowIfCancellationRequested();
        return Dispatch(dst, dstRegion, src, srcRegion, async, cancellationToken);
    }

    internal static Task Dispatch(TieredTensor dst, Region dstRegion, TieredTensor src, Region srcRegion, bool async, CancellationToken cancellationToken)
    {
        if (dstRegion.ElementCount == 0)
        {
            return Task.CompletedTask;
        }

        return (dst, src) switch
        {
            (CompressedTensor, _) or (_, CompressedTensor) => CompressedCopy.Run(dst, dstRegion, src, srcRegion, async, cancellationToken),
            (MixedTensor mixed, _) => ForEachSegment(mixed, dstRegion, srcRegion, (segment, segmentRegion, otherRegion) =>
                Dispatch(segment, segmentRegion, src, otherRegion, async, cancellationToken)),
            (_, MixedTensor mixed) => ForEachSegment(mixed, srcRegion, dstRegion, (segment, segmentRegion, otherRegion) =>
                Dispatch(dst, otherRegion, segment, segmentRegion, async, cancellationToken)),
            (DeviceTensor or BorrowedTensor, DeviceTensor or BorrowedTensor) => DeviceToDevice(PlainData(dst), dstRegion, PlainData(src), srcRegion),
            (DiskTensor d, DiskTensor s) => DiskToDisk(d, dstRegion, s, srcRegion, async, cancellationToken),
            (DiskTensor d, _) => MemoryToDisk(d, dstRegion, PlainData(src), srcRegion, async, cancellationToken),
            (_, DiskTensor s) => DiskToMemory(PlainData(dst), dstRegion, s, srcRegion, async, cancellationToken),
            _ => throw new NotSupportedException($"No copy from {src.GetType().Name} to {dst.GetType().Name}."),
        };
    }

    internal static torch.Tensor PlainData(TieredTensor tensor) => tensor switch
    {
        DeviceTensor device => device.Data,
        BorrowedTensor borrowed => borrowed.Data,
        _ => throw new NotSupportedException($"'{tensor.Name}' on {tensor.Tier.Name} is not held in memory."),
    };

    /// <summary>Splits a copy that touches a mixed tensor into one copy per segment it overlaps.</summary>
    private static Task ForEachSegment(MixedTensor mixed, Region mixedRegion, Region otherRegion, Func<TieredTensor, Region, Region, Task> copy)
    {
        const int dim = MixedTier.SplitDim;
        var start = mixedRegion.Starts[dim];
        var stop = start + mixedRegion.Lengths[dim];
        var starts = new List<Func<Task>>();
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
            starts.Add(() => copy(segment, segmentRegion, other));
        }

        return StartedTasks.WhenAll(starts);
    }

    private static Task DeviceToDevice(torch.Tensor dst, Region dstRegion, torch.Tensor src, Region srcRegion)
    {
        if (dstRegion.IsWhole && srcRegion.IsWhole)
        {
            dst.copy_(src);
            return Task.CompletedTask;
        }

        using var dstView = dst.index(dstRegion.ToIndices());
        using var srcView = src.index(srcRegion.ToIndices());
        dstView.copy_(srcView);
        return Task.CompletedTask;
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

    private static unsafe Task MemoryToDisk(DiskTensor dst, Region dstRegion, torch.Tensor src, Region srcRegion, bool async, CancellationToken cancellationToken)
    {
        var (staged, owned) = StageOnCpu(src, srcRegion);
        return RunIo(dst.Tier, () => dst.WriteRegion(dstRegion, TensorMemory.Pointer(staged)), async, cancellationToken, owned ? staged : null);
    }

    private static Task DiskToMemory(torch.Tensor dst, Region dstRegion, DiskTensor src, Region srcRegion, bool async, CancellationToken cancellationToken)
    {
        // Straight into the destination when its box is one contiguous CPU run; otherwise via a staging tensor.
        var runs = dstRegion.ByteRuns(TensorShapes.ElementSize(src.Dtype));
        var direct = dst.device_type == DeviceType.CPU && dst.is_contiguous() && runs.Count == 1;
        unsafe void Read()
        {
            if (direct)
            {
                src.ReadRegion(srcRegion, TensorMemory.Pointer(dst) + runs[0].Offset);
                return;
            }

            using var staged = torch.empty(srcRegion.Lengths, src.Dtype, torch.CPU).DetachFromDisposeScope();
            src.ReadRegion(srcRegion, TensorMemory.Pointer(staged));
            using var dstView = dst.index(dstRegion.ToIndices());
            dstView.copy_(staged);
        }

        return RunIo(src.Tier, Read, async, cancellationToken);
    }

    private static Task DiskToDisk(DiskTensor dst, Region dstRegion, DiskTensor src, Region srcRegion, bool async, CancellationToken cancellationToken)
    {
        unsafe void Transfer()
        {
            using var staged = torch.empty(srcRegion.Lengths, src.Dtype, torch.CPU).DetachFromDisposeScope();
            var pointer = TensorMemory.Pointer(staged);
            src.ReadRegion(srcRegion, pointer);
            dst.WriteRegion(dstRegion, pointer);
        }

        return RunIo(src.Tier, Transfer, async, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="io"/> now or on the tier's I/O pool; <paramref name="staging"/> (a buffer the transfer owns) is
    /// freed exactly once: after the transfer ran, or when it never runs (cancelled first, or the pool is shut down).
    /// </summary>
    private static Task RunIo(DiskTier tier, Action io, bool async, CancellationToken cancellationToken, torch.Tensor? staging = null)
    {
        void Transfer()
        {
            try
            {
                io();
            }
            finally
            {
                staging?.Dispose();
            }
        }

        if (!async)
        {
            Transfer();
            return Task.CompletedTask;
        }

        Task task;
        try
        {
            task = tier.IoPool.RunAsync(Transfer, cancellationToken);
        }
        catch
        {
            staging?.Dispose(); // the I/O pool is gone: the transfer never runs
            throw;
        }

        if (staging is not null)
        {
            // A transfer cancelled before it ran never frees its staging buffer itself.
            task.ContinueWith(_ => staging.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnCanceled, TaskScheduler.Default);
        }

        return task;
    }
}
