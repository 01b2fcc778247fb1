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

    /// <summary>
    /// <paramref name="x"/> (..., in) @ <paramref name="weight"/> (out, in)^T + <paramref name="bias"/> -> (..., out) in
    /// the compute dtype. In float32 on the CPU at decode's row counts (<see cref="PutsWeightOnLeft"/>) the weight is
    /// the left operand (<see cref="WeightOnLeft"/>). The result may then be a transposed view: callers reshape it,
    /// never view across rows.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, ComputeSettings compute)
    {
        ArgumentNullException.ThrowIfNull(x);
        var w = ToCompute(weight, compute, x.device);
        var b = bias is null ? null : ToCompute(bias, compute, x.device);
        return PutsWeightOnLeft(x, compute) ? WeightOnLeft(x, w, b) : nn.functional.linear(x, w, b);
    }

    /// <summary>
    /// Whether <see cref="Linear"/> multiplies with the weight on the left: in float32 on the CPU for more than 8 and at
    /// most 256 rows. Measured with 2 threads, whole decoder layers (projections, attention, norms) in float32, plain
    /// linear against weight on the left, alternating in one process: OPT-1.3B's 24 layers at 16 rows 712-723 -> 379-402
    /// ms a step, 32 rows x 2 batches 1714-1794 -> 1279-1313, 64 x 4 4870-5062 -> 4611-5076; OPT-125m at 32 rows 58-63 ->
    /// 51-53; OPT-1.3B's matmuls alone, weights out of cache, at 128 rows 1926 -> 1666 ms. At 8 rows and fewer the plain
    /// linear is as fast or faster (OPT-125m's matmuls, 8 rows x 4 batches: 90-94 against 103-105 ms). From 512 rows
    /// (prefill) the plain linear is even or ahead: OPT-125m's layers at 512 rows 2010-2022 against 2048-2101 ms, and
    /// the engine's OPT-125m prefill at 8 x 4 (2048 rows), builds alternating, 682-850 against 699-768 token/s.
    /// bfloat16 (oneDNN) and CUDA are fastest as a plain linear.
    /// </summary>
    public static bool PutsWeightOnLeft(Tensor x, ComputeSettings compute)
    {
        long rows = x.dim() == 0 ? 1 : x.numel() / x.shape[^1];
        return IsCpuFloat32(x, compute) && rows > 8 && rows <= 256;
    }

    /// <summary>
    /// Logits (rows, vocab) = <paramref name="x"/> (rows, h) @ <paramref name="table"/> (vocab, h)^T, in the compute
    /// dtype. In float32 on the CPU the table is the left operand at every row count: a whole vocabulary never stays in
    /// cache (OPT-125m, 8 rows: 20-22 ms instead of 27-31 ms a step; 32 rows: 28-34 instead of 40-52).
    /// </summary>
    public static Tensor VocabLogits(Tensor x, Tensor table, ComputeSettings compute)
    {
        CheckRank(x, 2, nameof(x), "(rows, hidden)");
        var weight = ToCompute(table, compute, x.device);
        return IsCpuFloat32(x, compute) ? WeightOnLeft(x, weight, null) : nn.functional.linear(x, weight);
    }

    private static bool IsCpuFloat32(Tensor x, ComputeSettings compute) =>
        compute.Dtype == ScalarType.Float32 && x.device.type == DeviceType.CPU;

    /// <summary>
    /// (..., in) @ (out, in)^T + bias as (out, in) @ (in, rows): MKL's sgemm repacks its right operand on every call,
    /// and a weight matrix that is not in cache costs more to repack than the small activation. Returns the product's
    /// transpose, a (..., out) view that is not contiguous.
    /// </summary>
    private static Tensor WeightOnLeft(Tensor x, Tensor weight, Tensor? bias)
    {
        var columns = x.reshape(-1, x.shape[^1]).t(); // (in, rows)
        var product = bias is null ? torch.mm(weight, columns) : torch.addmm(bias.unsqueeze(1), weight, columns, 1, 1); // (out, rows)
        long[] shape = [.. x.shape[..^1], weight.shape[0]];
        return product.t().view(shape); // (..., out)
    }

    /// <summary>
    /// A layer's output hidden: <paramref name="projection"/> + <paramref name="residual"/>, contiguous. In place when
    /// the projection is contiguous; a transposed one (float32 on the CPU, see <see cref="Linear"/>) is added into a
    /// new tensor laid out as the residual, so hidden states between layers are always contiguous.
    /// </summary>
    public static Tensor AddResidual(Tensor projection, Tensor residual) =>
        projection.is_contiguous() ? projection.add_(residual) : residual.add(projection);

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
