namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Layers;
using static TorchSharp.torch;

/// <summary>OPT output embedding (FlexGen's <c>opt_output_embed</c>): final layer norm, tied logits, token choice.</summary>
public static class OutputEmbed
{
    /// <summary>
    /// Logits of the last position: (batch, seq, h) -> (batch, vocab) in the compute dtype, logits = layer_norm(h) @
    /// embed_tokens^T (only the last position is projected: the only one FlexGen reads).
    /// </summary>
    public static Tensor Logits(Tensor hidden, OutputEmbedWeights weights, ComputeSettings compute)
    {
        var device = LayerMath.CheckLayerInputs(hidden, weights, compute);

        using var scope = NewDisposeScope();
        var last = LayerMath.ToCompute(hidden.select(1, hidden.shape[1] - 1), compute, device); // (b, h)
        var normed = LayerMath.LayerNorm(last, weights.LayerNormWeight, weights.LayerNormBias, weights.LayerNormEps, compute);
        var logits = LayerMath.VocabLogits(normed, weights.TokenEmbedding, compute); // (b, vocab)
        return logits.MoveToOuterDisposeScope();
    }
}
