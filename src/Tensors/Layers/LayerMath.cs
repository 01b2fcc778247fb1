namespace FlexGen.Tensors.Layers;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>Shared pieces of every family's layer math.</summary>
internal static class LayerMath
{
    /// <summary>
    /// <paramref name="tensor"/> in the compute dtype on <paramref name="device"/> (the same storage when it already
    /// is: then the returned wrapper is a new handle to it, disposed with the caller's scope without freeing it).
    /// </summary>
    public static Tensor ToCompute(Tensor tensor, ComputeSettings compute, Device device) =>
        tensor.to(compute.Dtype, device);

    /// <summary>Layer norm over the last dim with the model's <paramref name="eps"/> (a family config value).</summary>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps, ComputeSettings compute)
    {
        long h = x.shape[^1];
        return nn.functional.layer_norm(x, [h], ToCompute(weight, compute, x.device),
            ToCompute(bias, compute, x.device), eps);
    }

    public static Tensor Linear(Tensor x, Tensor weight, Tensor bias, ComputeSettings compute) =>
        nn.functional.linear(x, ToCompute(weight, compute, x.device), ToCompute(bias, compute, x.device));

    /// <summary>
    /// Logits (rows, vocab) = <paramref name="x"/> (rows, h) @ <paramref name="table"/> (vocab, h)^T, in the compute
    /// dtype. In float32 on the CPU the table is the left operand of the matmul: MKL's sgemm repacks its right operand
    /// on every call, and for a whole vocabulary that costs more than the product (OPT-125m, 8 rows: 20-22 ms instead
    /// of 27-31 ms a step; 32 rows: 28-34 instead of 40-52). The result is then a transposed view. bfloat16 (oneDNN) and
    /// CUDA are fastest as a plain linear.
    /// </summary>
    public static Tensor VocabLogits(Tensor x, Tensor table, ComputeSettings compute)
    {
        CheckRank(x, 2, nameof(x), "(rows, hidden)");
        var weight = ToCompute(table, compute, x.device);
        return compute.Dtype == ScalarType.Float32 && x.device.type == DeviceType.CPU
            ? torch.matmul(weight, x.t()).t() // (vocab, h) @ (h, rows) -> (rows, vocab)
            : nn.functional.linear(x, weight);
    }

    public static void CheckRank(Tensor tensor, int rank, string name, string shape)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (tensor.dim() != rank)
        {
            throw new ArgumentException(
                $"{name} must have shape {shape}, got ({string.Join(", ", tensor.shape)}).", name);
        }
    }

    public static void CheckHidden(Tensor hidden, string name = "hidden")
    {
        CheckRank(hidden, 3, name, "(batch, seq, hidden)");
    }

    /// <summary>
    /// What every layer forward checks first: hidden is (batch, seq, h), weights and compute are given, and compute
    /// runs on hidden's device, which is returned.
    /// </summary>
    public static Device CheckLayerInputs(Tensor hidden, object weights, ComputeSettings compute)
    {
        CheckHidden(hidden);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(compute);
        var device = hidden.device;
        compute.EnsureSupportedOn(device);
        return device;
    }

    /// <summary>The attention mask as bool on <paramref name="device"/>, checked to be (batch, seqTotal).</summary>
    public static Tensor MaskAsBool(Tensor mask, long batch, Device device)
    {
        CheckRank(mask, 2, "attentionMask", "(batch, total_seq)");
        if (mask.shape[0] != batch)
        {
            throw new ArgumentException(
                $"attentionMask has {mask.shape[0]} rows but the hidden states have batch {batch}.", nameof(mask));
        }

        return mask.dtype == ScalarType.Bool ? mask.to(device) : mask.ne(0).to(device);
    }
}
