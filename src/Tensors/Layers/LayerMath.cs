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

    /// <summary>
    /// Whether a weight stored as <paramref name="stored"/> is best handed to <see cref="Linear"/> and
    /// <see cref="VocabLogits"/> as stored, not converted into the compute dtype first, for products of
    /// <paramref name="rows"/> rows on <paramref name="device"/>: a float16 weight under a float32 compute on the CPU at
    /// 1 to <see cref="SmallRowLinear.MaxRows"/> rows, which <see cref="SmallRowLinear"/> widens in registers, exactly (the
    /// same products). There a disk weight's widening into float32 (libtorch's <c>copy_</c>: reading 2 bytes and writing 4
    /// per value, then the product reading 4) cost more than the product itself. Any weight may still reach those two in
    /// another dtype: they convert what the kernel does not take.
    /// </summary>
    public static bool MultipliesAsStored(ScalarType stored, long rows, ComputeSettings compute, Device device) =>
        device.type == DeviceType.CPU && rows >= 1 && rows <= MultipliesStoredUpToRows
        && stored != compute.Dtype && SmallRowLinear.MultipliesAsStored(compute.Dtype, stored);

    /// <summary>The most rows at which a CPU compute multiplies a narrower weight as stored (<see cref="MultipliesAsStored"/>); 0 on a CPU without the kernel.</summary>
    public static int MultipliesStoredUpToRows => SmallRowLinear.Available ? SmallRowLinear.MaxRows : 0;

    /// <summary>Layer norm over the last dim with the model's <paramref name="eps"/> (a family config value).</summary>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps, ComputeSettings compute)
    {
        long h = x.shape[^1];
        return nn.functional.layer_norm(x, [h], ToCompute(weight, compute, x.device),
            ToCompute(bias, compute, x.device), eps);
    }

    /// <summary>
    /// <paramref name="x"/> (..., in) @ <paramref name="weight"/> (out, in)^T + <paramref name="bias"/> -> (..., out) in
    /// the compute dtype. On the CPU up to 8 rows (decode at small batches) the weight streams through
    /// <see cref="SmallRowLinear"/>'s kernel. bfloat16 on a CPU without bfloat16 instructions multiplies through MKL
    /// (<see cref="MklBFloat16Gemm"/>). On the CPU at decode's row counts (<see cref="PutsWeightOnLeft"/>) the weight is
    /// the left operand (<see cref="WeightOnLeft"/>). The result may then be a transposed view: callers reshape it,
    /// never view across rows.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, ComputeSettings compute)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (SmallRowLinear.TryLinear(x, weight, bias) is { } asStored) return asStored; // see MultipliesAsStored
        var w = ToCompute(weight, compute, x.device);
        var b = bias is null ? null : ToCompute(bias, compute, x.device);
        return SmallRowLinear.TryLinear(x, w, b) ?? MklBFloat16Gemm.TryLinear(x, w, b)
            ?? (PutsWeightOnLeft(x, compute) ? WeightOnLeft(x, w, b) : nn.functional.linear(x, w, b));
    }

    /// <summary>
    /// Whether <see cref="Linear"/> multiplies with the weight on the left: on the CPU, in float32 for more than 8 and at
    /// most 256 rows, in bfloat16 for 32 to 128 rows where libtorch multiplies it (not through MKL: MKL's bfloat16 GEMM
    /// with the weight on the left was slower at decode's shapes, e.g. 3072 x 768 at 32 rows 2.0 against 1.8 ms, OPT's
    /// vocabulary 58 against 38 ms). Every linear of a layer sees the same rows, so a transposed output
    /// only ever feeds another weight-on-left product (a plain bfloat16 linear over such a 3-D view took 100x longer:
    /// OPT-125m's MLP 181 against 1.8 ms).
    /// float32, measured with 2 threads, whole decoder layers (projections, attention, norms), plain linear against
    /// weight on the left, alternating in one process: OPT-1.3B's 24 layers at 16 rows 712-723 -> 379-402 ms a step, 32
    /// rows x 2 batches 1714-1794 -> 1279-1313, 64 x 4 4870-5062 -> 4611-5076; OPT-125m at 32 rows 58-63 -> 51-53;
    /// OPT-1.3B's matmuls alone, weights out of cache, at 128 rows 1926 -> 1666 ms. At 8 rows and fewer the plain linear
    /// is as fast or faster (OPT-125m's matmuls, 8 rows x 4 batches: 90-94 against 103-105 ms). From 512 rows (prefill)
    /// the plain linear is even or ahead: OPT-125m's layers at 512 rows 2010-2022 against 2048-2101 ms, and the engine's
    /// OPT-125m prefill at 8 x 4 (2048 rows), builds alternating, 682-850 against 699-768 token/s.
    /// bfloat16 in libtorch (oneDNN), OPT-1.3B's decoder layer (attention over 20 positions and MLP, 24 layers' weights in turn),
    /// medians of 5 alternating passes, plain -> left: 16 rows 8.17 / 8.64 ms (both plain: the noise), 32 rows 11.00 ->
    /// 9.04, 48 13.50 -> 11.64, 64 16.05 -> 14.17, 96 21.30 -> 20.38, 128 26.69 -> 26.01, 192 37.40 / 37.28 (both
    /// plain); the engine's OPT-1.3B decode, resident, 64 x 1, alternating runs: 106.1, 103.7, 117.3 -> 118.1, 124.0,
    /// 122.7 token/s. Its matmuls alone: left wins at 32-128 rows where out >= in (2048 x 2048 at 32 rows 0.75 -> 0.49
    /// ms) and loses 10% on OPT-1.3B's fc2 (2048 x 8192) and on the vocabulary (50272 x 2048 at 64 rows 25 -> 45 ms: see
    /// <see cref="VocabLogits"/>); below 32 rows it loses everywhere (2048 x 2048 at 16 rows 0.58 -> 0.83 ms).
    /// CUDA is fastest as a plain linear.
    /// </summary>
    public static bool PutsWeightOnLeft(Tensor x, ComputeSettings compute)
    {
        if (x.device.type != DeviceType.CPU)
        {
            return false;
        }

        long rows = x.dim() == 0 ? 1 : x.numel() / x.shape[^1];
        return compute.Dtype switch
        {
            ScalarType.Float32 => rows > 8 && rows <= 256,
            ScalarType.BFloat16 => rows >= 32 && rows <= 128 && !MklBFloat16Gemm.Used,
            _ => false,
        };
    }

    /// <summary>
    /// Logits (rows, vocab) = <paramref name="x"/> (rows, h) @ <paramref name="table"/> (vocab, h)^T, in the compute
    /// dtype. In float32 on the CPU the table is the left operand at every row count: a whole vocabulary never stays in
    /// cache (OPT-125m, 8 rows: 20-22 ms instead of 27-31 ms a step; 32 rows: 28-34 instead of 40-52). Not in bfloat16,
    /// whose plain product is the faster one (OPT-1.3B's head at 64 rows: 25-33 against 45-80 ms), through MKL where
    /// <see cref="Linear"/> goes through it. Up to 8 rows on the CPU, either dtype, through <see cref="SmallRowLinear"/>.
    /// </summary>
    public static Tensor VocabLogits(Tensor x, Tensor table, ComputeSettings compute)
    {
        CheckRank(x, 2, nameof(x), "(rows, hidden)");
        if (SmallRowLinear.TryLinear(x, table, null) is { } asStored) return asStored; // see MultipliesAsStored
        var weight = ToCompute(table, compute, x.device);
        return SmallRowLinear.TryLinear(x, weight, null)
            ?? (IsCpuFloat32(x, compute) ? WeightOnLeft(x, weight, null) : MklBFloat16Gemm.TryLinear(x, weight, null) ?? nn.functional.linear(x, weight));
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
