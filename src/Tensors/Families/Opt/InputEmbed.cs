namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>OPT input embedding (FlexGen's <c>opt_input_embed</c>): token embedding + learned positions.</summary>
public static class InputEmbed
{
    /// <summary>OPT's learned-position offset: row 0 and 1 of the table are reserved; pads map to row 1.</summary>
    public const int PositionOffset = 2;

    /// <summary>
    /// Position rows for <paramref name="attentionMask"/> (batch, total_seq): <c>cumsum(mask, 1) * mask + 1</c>,
    /// pads map to 1, the first real token to 2. int64, same shape.
    /// </summary>
    public static Tensor Positions(Tensor attentionMask)
    {
        LayerMath.CheckRank(attentionMask, 2, nameof(attentionMask), "(batch, total_seq)");
        using var scope = NewDisposeScope();
        var mask = attentionMask.to(ScalarType.Int64);
        var positions = mask.cumsum(1).mul(mask).add(PositionOffset - 1);
        return positions.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Hidden states (batch, new_seq, h) in the compute dtype for <paramref name="tokenIds"/> (batch, new_seq) int64:
    /// the prompt at prefill, the last generated token at decode. <paramref name="attentionMask"/> (batch, total_seq)
    /// covers every position so far (total_seq = past + new_seq); positions are sliced to the new tokens.
    /// Computes on the device of <paramref name="tokenIds"/>.
    /// </summary>
    public static Tensor Forward(Tensor tokenIds, Tensor attentionMask, InputEmbedWeights weights, ComputeSettings compute)
    {
        LayerMath.CheckRank(tokenIds, 2, nameof(tokenIds), "(batch, new_seq)");
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(compute);
        var device = tokenIds.device;
        compute.EnsureSupportedOn(device);
        long batch = tokenIds.shape[0], newSeq = tokenIds.shape[1];
        if (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] < newSeq)
        {
            throw new ArgumentException(
                $"attentionMask must be (batch {batch}, total_seq >= {newSeq}), got ({string.Join(", ", attentionMask.shape)}).",
                nameof(attentionMask));
        }

        using var scope = NewDisposeScope();
        var ids = tokenIds.to(ScalarType.Int64);
        long h = weights.TokenEmbedding.shape[1];

        // (batch * new_seq, h) rows of each table, gathered where the table lives and before the dtype conversion:
        // only the rows travel and get converted.
        var tokens = Rows(weights.TokenEmbedding, ids.reshape(-1));
        var positions = Positions(attentionMask).narrow(1, attentionMask.shape[1] - newSeq, newSeq);
        var pos = Rows(weights.PositionEmbedding, positions.reshape(-1));

        // (batch, new_seq, h)
        var hidden = LayerMath.ToCompute(tokens, compute, device).add(LayerMath.ToCompute(pos, compute, device))
            .view(batch, newSeq, h);
        return hidden.MoveToOuterDisposeScope();
    }

    private static Tensor Rows(Tensor table, Tensor index) => table.index_select(0, index.to(table.device));
}
