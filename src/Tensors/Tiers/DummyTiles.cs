namespace FlexGen.Tensors.Tiers;

using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using TorchSharp;

/// <summary>
/// The tiles of the dummy weights a load writes to disk (<see cref="TierCopy.FillTiled"/>: each weight is its pattern
/// repeated), drawn ahead in load order on the thread pool, so that drawing the next weights' normal values (about
/// 80 M/s per core here, slower than the disk writes them) runs on the other core while this one's are written.
/// </summary>
internal sealed class DummyTiles : IDisposable
{
    /// <summary>Tiles drawn at once ahead of the one being written: one per core of these machines.</summary>
    private const int Lookahead = 2;

    private readonly WeightSource _options;
    private readonly (WeightPlacement Placement, torch.ScalarType Dtype)[] _order;
    private readonly Task<torch.Tensor>?[] _drawn;
    private int _next;
    private int _started;

    public DummyTiles(PlacementPlan plan, WeightSource options, torch.ScalarType? computeDtype)
    {
        _options = options;
        _order = plan.Layers.SelectMany(l => l.Weights).Where(w => Writes(options, w))
            .Select(w => (w, ModelWeights.HomeDtype(plan, w, computeDtype))).ToArray();
        _drawn = new Task<torch.Tensor>?[_order.Length];
        DrawAhead();
    }

    /// <summary>True when <paramref name="placement"/> is a dummy weight written to disk as its tile.</summary>
    public static bool Writes(WeightSource options, WeightPlacement placement) =>
        options.Source != WeightSourceKind.Files && !placement.Compressed && placement.Home == TierKind.Disk;

    /// <summary>
    /// The tile of <paramref name="placement"/>, the next such weight in load order: 1-D, in its home's dtype, the values
    /// <see cref="DummyWeights.Pattern"/> gives rounded to the stored dtype first (as a weight made whole and then
    /// converted would be). The caller owns it.
    /// </summary>
    public torch.Tensor Take(WeightPlacement placement)
    {
        if (_next >= _order.Length || !ReferenceEquals(_order[_next].Placement, placement))
        {
            throw new InvalidOperationException($"The dummy tile of '{placement.Spec.FileName}' was asked for out of load order.");
        }

        var drawn = _drawn[_next]!;
        _drawn[_next++] = null;
        DrawAhead();
        return drawn.GetAwaiter().GetResult();
    }

    /// <summary>Frees the tiles drawn and not taken (a load that failed or was cancelled), once their draws end.</summary>
    public void Dispose()
    {
        foreach (var drawn in _drawn.Where(d => d is not null))
        {
            try
            {
                drawn!.GetAwaiter().GetResult().Dispose();
            }
            catch (Exception)
            {
                // The load is failing already; a draw that failed too has nothing to free.
            }
        }
    }

    private void DrawAhead()
    {
        while (_started < _order.Length && _started <= _next + Lookahead - 1)
        {
            var (placement, dtype) = _order[_started];
            _drawn[_started++] = Task.Run(() => Draw(placement.Spec, dtype));
        }
    }

    private torch.Tensor Draw(WeightSpec spec, torch.ScalarType dtype)
    {
        long count = spec.ElementCount;
        using var pattern = _options.Source == WeightSourceKind.DummyOnes
            ? torch.ones([Math.Min(count, DummyWeights.DrawnElements)], torch.ScalarType.Float32)
            : DummyWeights.Pattern(spec, count, unchecked((ulong)_options.Seed)); // (min(count, DrawnElements)) float32
        using var rounded = pattern.to(spec.Dtype);
        return rounded.to(dtype);
    }
}
