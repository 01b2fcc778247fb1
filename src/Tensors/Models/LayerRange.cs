namespace FlexGen.Tensors.Models;

/// <summary>
/// A contiguous slice of a model's execution order (layers j = <see cref="First"/> .. <see cref="End"/> - 1 of
/// <see cref="Total"/>): what one pipeline stage holds and runs. The stage with <see cref="First"/> = 0 embeds, the one
/// ending at <see cref="Total"/> samples.
/// </summary>
public sealed record LayerRange
{
    public LayerRange(int first, int count, int total)
    {
        if (total < 1 || first < 0 || count < 1 || first + count > total)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"layers {first}..{first + count - 1} are not a non-empty range of the model's {total} layers");
        }

        (First, Count, Total) = (first, count, total);
    }

    public int First { get; }

    public int Count { get; }

    /// <summary>The model's layer count (the execution order's length).</summary>
    public int Total { get; }

    public int End => First + Count;

    /// <summary>True for the stage that embeds the tokens.</summary>
    public bool IsFirst => First == 0;

    /// <summary>True for the stage that computes the output head and samples.</summary>
    public bool IsLast => End == Total;

    /// <summary>The whole model as one range.</summary>
    public static LayerRange All(int total) => new(0, total, total);

    public override string ToString() => $"layers {First}..{End - 1} of {Total}";
}
