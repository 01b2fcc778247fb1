namespace FlexGen.Tensors.Tiers;

/// <summary>A half-open range [<see cref="Start"/>, <see cref="Stop"/>) along one dimension (a Python slice with step 1).</summary>
public readonly record struct IndexRange(long Start, long Stop)
{
    public long Length => Stop - Start;

    /// <summary>The whole extent [0, <paramref name="extent"/>).</summary>
    public static IndexRange All(long extent) => new(0, extent);

    public override string ToString() => $"{Start}:{Stop}";
}

/// <summary>
/// A box inside a tensor: per-dimension start and length, resolved from an optional list of <see cref="IndexRange"/>s
/// (missing trailing dimensions, or a null list, mean "all"), as FlexGen's index tuples.
/// </summary>
internal readonly struct Region
{
    private Region(long[] shape, long[] starts, long[] lengths)
    {
        Shape = shape;
        Starts = starts;
        Lengths = lengths;
    }

    public long[] Shape { get; }

    public long[] Starts { get; }

    public long[] Lengths { get; }

    public int Rank => Shape.Length;

    public long ElementCount => TensorShapes.ElementCount(Lengths);

    public bool IsWhole
    {
        get
        {
            for (var d = 0; d < Rank; d++)
            {
                if (Starts[d] != 0 || Lengths[d] != Shape[d])
                {
                    return false;
                }
            }

            return true;
        }
    }

    public static Region Resolve(TieredTensor tensor, IReadOnlyList<IndexRange>? ranges, string role) =>
        Resolve(tensor.ShapeArray, ranges, $"{role} '{tensor.Name}'");

    public static Region Resolve(long[] shape, IReadOnlyList<IndexRange>? ranges, string what)
    {
        var rank = shape.Length;
        if (ranges is not null && ranges.Count > rank)
        {
            throw new ArgumentException($"{what} of shape {TensorShapes.Format(shape)} was given {ranges.Count} index ranges; it has {rank} dimensions.");
        }

        var starts = new long[rank];
        var lengths = new long[rank];
        for (var d = 0; d < rank; d++)
        {
            var range = ranges is not null && d < ranges.Count ? ranges[d] : IndexRange.All(shape[d]);
            if (range.Start < 0 || range.Stop < range.Start || range.Stop > shape[d])
            {
                throw new ArgumentOutOfRangeException(nameof(ranges), $"{what}: index range {range} of dimension {d} is outside [0, {shape[d]}] or reversed.");
            }

            starts[d] = range.Start;
            lengths[d] = range.Length;
        }

        return new Region(shape, starts, lengths);
    }

    /// <summary>The same box with dimension <paramref name="dim"/> replaced by [start, start + length).</summary>
    public Region With(int dim, long start, long length)
    {
        var starts = (long[])Starts.Clone();
        var lengths = (long[])Lengths.Clone();
        starts[dim] = start;
        lengths[dim] = length;
        return new Region(Shape, starts, lengths);
    }

    /// <summary>This box seen inside a buffer that holds exactly the box <paramref name="outer"/> (which contains it).</summary>
    public Region RelativeTo(Region outer)
    {
        var starts = new long[Rank];
        for (var d = 0; d < Rank; d++)
        {
            starts[d] = Starts[d] - outer.Starts[d];
        }

        return new Region(outer.Lengths, starts, Lengths);
    }

    /// <summary>The same box relative to a tensor of <paramref name="shape"/>.</summary>
    public Region On(long[] shape) => new(shape, Starts, Lengths);

    public TorchSharp.torch.TensorIndex[] ToIndices()
    {
        var indices = new TorchSharp.torch.TensorIndex[Rank];
        for (var d = 0; d < Rank; d++)
        {
            indices[d] = TorchSharp.torch.TensorIndex.Slice(Starts[d], Starts[d] + Lengths[d]);
        }

        return indices;
    }

    public IndexRange[] ToRanges()
    {
        var ranges = new IndexRange[Rank];
        for (var d = 0; d < Rank; d++)
        {
            ranges[d] = new IndexRange(Starts[d], Starts[d] + Lengths[d]);
        }

        return ranges;
    }

    /// <summary>
    /// The contiguous byte runs of this box in a C-ordered buffer of <see cref="Shape"/>, in C order: each is
    /// (byte offset in the buffer, byte length). Consecutive runs are consecutive in a contiguous copy of the box.
    /// </summary>
    public List<(long Offset, long Length)> ByteRuns(int elementSize)
    {
        var runs = new List<(long, long)>();
        if (ElementCount == 0)
        {
            return runs;
        }

        var rank = Rank;
        var strides = new long[rank];
        long stride = elementSize;
        for (var d = rank - 1; d >= 0; d--)
        {
            strides[d] = stride;
            stride *= Shape[d];
        }

        // The innermost dimension that is cut: dimensions after it are whole, so each run spans it.
        var cut = -1;
        for (var d = rank - 1; d >= 0; d--)
        {
            if (Starts[d] != 0 || Lengths[d] != Shape[d])
            {
                cut = d;
                break;
            }
        }

        if (cut < 0)
        {
            runs.Add((0, stride));
            return runs;
        }

        var runBytes = Lengths[cut] * strides[cut];
        var index = new long[cut];
        while (true)
        {
            var offset = Starts[cut] * strides[cut];
            for (var d = 0; d < cut; d++)
            {
                offset += (Starts[d] + index[d]) * strides[d];
            }

            if (runs.Count > 0 && runs[^1].Item1 + runs[^1].Item2 == offset)
            {
                runs[^1] = (runs[^1].Item1, runs[^1].Item2 + runBytes);
            }
            else
            {
                runs.Add((offset, runBytes));
            }

            var dim = cut - 1;
            while (dim >= 0)
            {
                if (++index[dim] < Lengths[dim])
                {
                    break;
                }

                index[dim] = 0;
                dim--;
            }

            if (dim < 0)
            {
                return runs;
            }
        }
    }
}
