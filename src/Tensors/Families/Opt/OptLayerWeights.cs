namespace FlexGen.Tensors.Families.Opt;

using static TorchSharp.torch;

// Weight views that OPT's layer math reads. Each layer norm's epsilon travels with its weight and bias, as
// torch.nn.LayerNorm holds all three; whoever builds a view from a config sets it from OptConfig.LayerNormEps.
// They do not own their tensors: whoever loaded them (OptWeights, a tier)
// disposes them. Each record lists its tensors in FlexGen's order (the weight specs' order), and FromOrdered
// builds it from a list in that order, so a tier can hand over what it loaded without naming every tensor.

/// <summary>InputEmbed weights: token table (vocab, h), learned positions (max_seq_len + 2, h).</summary>
public sealed record InputEmbedWeights(Tensor TokenEmbedding, Tensor PositionEmbedding)
{
    public const int Count = 2;

    public IReadOnlyList<Tensor> Ordered => [TokenEmbedding, PositionEmbedding];

    public static InputEmbedWeights FromOrdered(IReadOnlyList<Tensor> weights)
    {
        WeightList.Check(weights, Count, nameof(InputEmbedWeights));
        return new(weights[0], weights[1]);
    }
}

/// <summary>SelfAttention weights of one layer: projections (h, h) and biases (h), then the pre-attention layer norm.</summary>
public sealed record SelfAttentionWeights(
    Tensor QWeight, Tensor QBias,
    Tensor KWeight, Tensor KBias,
    Tensor VWeight, Tensor VBias,
    Tensor OutWeight, Tensor OutBias,
    Tensor LayerNormWeight, Tensor LayerNormBias)
{
    /// <summary>Epsilon of this layer's norm (<see cref="OptConfig.LayerNormEps"/>).</summary>
    public double LayerNormEps { get; init; } = OptConfig.DefaultLayerNormEps;

    public const int Count = 10;

    public IReadOnlyList<Tensor> Ordered =>
        [QWeight, QBias, KWeight, KBias, VWeight, VBias, OutWeight, OutBias, LayerNormWeight, LayerNormBias];

    public static SelfAttentionWeights FromOrdered(IReadOnlyList<Tensor> weights)
    {
        WeightList.Check(weights, Count, nameof(SelfAttentionWeights));
        return new(weights[0], weights[1], weights[2], weights[3], weights[4], weights[5], weights[6], weights[7],
            weights[8], weights[9]);
    }
}

/// <summary>Mlp weights of one layer: fc1 (ffn, h) + bias, fc2 (h, ffn) + bias, then the pre-MLP layer norm.</summary>
public sealed record MlpWeights(
    Tensor Fc1Weight, Tensor Fc1Bias,
    Tensor Fc2Weight, Tensor Fc2Bias,
    Tensor LayerNormWeight, Tensor LayerNormBias)
{
    /// <summary>Epsilon of this layer's norm (<see cref="OptConfig.LayerNormEps"/>).</summary>
    public double LayerNormEps { get; init; } = OptConfig.DefaultLayerNormEps;

    public const int Count = 6;

    public IReadOnlyList<Tensor> Ordered => [Fc1Weight, Fc1Bias, Fc2Weight, Fc2Bias, LayerNormWeight, LayerNormBias];

    public static MlpWeights FromOrdered(IReadOnlyList<Tensor> weights)
    {
        WeightList.Check(weights, Count, nameof(MlpWeights));
        return new(weights[0], weights[1], weights[2], weights[3], weights[4], weights[5]);
    }
}

/// <summary>OutputEmbed weights: final layer norm, then the token table (vocab, h), tied with the input embedding.</summary>
public sealed record OutputEmbedWeights(Tensor LayerNormWeight, Tensor LayerNormBias, Tensor TokenEmbedding)
{
    /// <summary>Epsilon of this layer's norm (<see cref="OptConfig.LayerNormEps"/>).</summary>
    public double LayerNormEps { get; init; } = OptConfig.DefaultLayerNormEps;

    public const int Count = 3;

    public IReadOnlyList<Tensor> Ordered => [LayerNormWeight, LayerNormBias, TokenEmbedding];

    public static OutputEmbedWeights FromOrdered(IReadOnlyList<Tensor> weights)
    {
        WeightList.Check(weights, Count, nameof(OutputEmbedWeights));
        return new(weights[0], weights[1], weights[2]);
    }
}

internal static class WeightList
{
    public static void Check(IReadOnlyList<Tensor> weights, int count, string kind)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (weights.Count != count)
        {
            throw new ArgumentException($"{kind} takes {count} tensors in FlexGen order, got {weights.Count}.", nameof(weights));
        }
    }
}
