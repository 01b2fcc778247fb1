namespace FlexGen.Tensors.Families.Opt;

using FlexGen.Tensors.Layers;
using static TorchSharp.torch;

/// <summary>OPT MLP block (FlexGen's <c>mlp</c>): pre-layer-norm, fc1, ReLU, fc2, residual add.</summary>
public static class Mlp
{
    /// <summary>(batch, seq, h) -> (batch, seq, h) in the compute dtype, on the device of <paramref name="hidden"/>.</summary>
    public static Tensor Forward(Tensor hidden, MlpWeights weights, ComputeSettings compute)
    {
        LayerMath.CheckLayerInputs(hidden, weights, compute);

        using var scope = NewDisposeScope();
        var x = LayerMath.ToCompute(hidden, compute, hidden.device);
        var normed = LayerMath.LayerNorm(x, weights.LayerNormWeight, weights.LayerNormBias, weights.LayerNormEps, compute);
        var inner = LayerMath.Linear(normed, weights.Fc1Weight, weights.Fc1Bias, compute).relu_(); // (b, s, ffn)
        var output = LayerMath.AddResidual(LayerMath.Linear(inner, weights.Fc2Weight, weights.Fc2Bias, compute), x); // (b, s, h)
        return output.MoveToOuterDisposeScope();
    }
}
