namespace FlexGen.Tensors.Layers;

using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// bfloat16 linear layers on a CPU without bfloat16 matrix instructions, through Intel MKL's
/// <c>cblas_gemm_bf16bf16f32</c> (bfloat16 operands, float32 accumulation and result, then rounded to bfloat16 as
/// libtorch's own bfloat16 linear rounds), which libtorch_cpu.so links in and exports. On such a CPU libtorch's bfloat16
/// matmul is oneDNN's emulation; MKL's runs at about its float32 rate. Measured on the 2-core AVX2 EPYC (Zen 3), weights
/// out of cache, GFLOP/s libtorch bfloat16 / MKL bfloat16 / libtorch float32: 768 x 3072 at 8 rows 13-18 / 29-59 /
/// 43-54, at 32 rows 17 / 94-107 / 72-106, 3072 x 768 at 32 rows 16-20 / 74-82 / 70-78, OPT's vocabulary (50272 x 768)
/// at 32 rows 15-17 / 66-78 / 71-93, at 2048 rows 16 / 109-145 / 138-155. Where the CPU has bfloat16 instructions, or
/// where it cannot be told, libtorch's linear stays (oneDNN runs them natively there); where libtorch has no MKL (no
/// such export), too.
/// </summary>
internal static unsafe class MklBFloat16Gemm
{
    private const int RowMajor = 101; // CBLAS_LAYOUT
    private const int NoTrans = 111, Trans = 112; // CBLAS_TRANSPOSE

    // A block of output columns whose weight MKL widens to float32 takes at most this much.
    private const long WidenedBlockBytes = 8L << 20;

    private static readonly Lazy<Api?> Library = new(Api.Find);

    /// <summary>True when this process's libtorch exports MKL's bfloat16 GEMM and TorchSharp's tensor data pointer.</summary>
    public static bool Available => Library.Value is not null;

    /// <summary>True when bfloat16 linears on the CPU go through MKL here: available, and the CPU known to lack bfloat16 instructions.</summary>
    public static bool Used => TorchRuntime.CpuMultipliesBFloat16 == false && Available;

    /// <summary>
    /// <paramref name="x"/> (..., in) @ <paramref name="weight"/> (out, in)^T + <paramref name="bias"/> (out) -> (..., out)
    /// through MKL where it is <see cref="Used"/> here and the operands are bfloat16 on the CPU and fit MKL's 32-bit
    /// sizes; else null, and the caller multiplies with libtorch.
    /// </summary>
    public static Tensor? TryLinear(Tensor x, Tensor weight, Tensor? bias) =>
        Used && IsCpuBFloat16(x) && IsCpuBFloat16(weight) && (bias is null || IsCpuBFloat16(bias)) && FitsMkl(x, weight)
            ? Multiply(Library.Value!, x, weight, bias)
            : null;

    /// <summary>
    /// The product of <see cref="TryLinear"/> through MKL whatever the CPU (tests compare it on any machine with MKL):
    /// contiguous, bfloat16.
    /// </summary>
    /// <exception cref="InvalidOperationException">MKL's bfloat16 GEMM is not <see cref="Available"/>.</exception>
    /// <exception cref="ArgumentException">An operand is not bfloat16 on the CPU, or the shapes do not match.</exception>
    internal static Tensor Linear(Tensor x, Tensor weight, Tensor? bias)
    {
        var api = Library.Value ?? throw new InvalidOperationException("This libtorch exports no MKL cblas_gemm_bf16bf16f32.");
        foreach (var (t, name) in new[] { (x, nameof(x)), (weight, nameof(weight)), (bias, nameof(bias)) })
        {
            if (t is not null && !IsCpuBFloat16(t)) throw new ArgumentException($"Linear through MKL takes bfloat16 on the CPU, got {t.dtype} on {t.device}.", name);
        }

        return Multiply(api, x, weight, bias);
    }

    // The product of operands known to be bfloat16 on the CPU (TryLinear has checked them, Linear too); shapes checked here.
    private static Tensor Multiply(Api api, Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dim() == 0 || weight.dim() != 2 || weight.shape[1] != x.shape[^1])
        {
            throw new ArgumentException(
                $"Linear: input ({string.Join(", ", x.shape)}) does not match weight ({string.Join(", ", weight.shape)}): want (..., in) and (out, in).", nameof(x));
        }

        long inFeatures = x.shape[^1], outFeatures = weight.shape[0];
        if (bias is not null && (bias.dim() != 1 || bias.shape[0] != outFeatures))
        {
            throw new ArgumentException($"Linear: bias ({string.Join(", ", bias.shape)}) does not match the weight's {outFeatures} outputs.", nameof(bias));
        }

        long rows = x.shape[..^1].Aggregate(1L, (product, size) => product * size);
        using var scope = NewDisposeScope();
        var a = x.reshape(rows, inFeatures); // (rows, in)
        if (a.stride(1) != 1 || a.stride(0) < Math.Max(inFeatures, 1) || a.stride(0) > int.MaxValue) a = a.contiguous();

        // The weight as the (in, out) right operand: a row-major (out, in) weight transposed in place, a column-major one as is.
        var b = weight;
        int transB;
        long ldb;
        if (b.stride(1) == 1 && b.stride(0) >= Math.Max(inFeatures, 1)) (transB, ldb) = (Trans, b.stride(0));
        else if (b.stride(0) == 1 && b.stride(1) >= Math.Max(outFeatures, 1)) (transB, ldb) = (NoTrans, b.stride(1));
        else (b, transB, ldb) = (b.contiguous(), Trans, Math.Max(inFeatures, 1));

        // A bias is the product's start (beta 1), so it is added in float32 before the one rounding; without one the
        // product is written over (beta 0). With nothing to sum (in 0) it is zeros or the bias, and MKL is not called.
        var product = bias is null
            ? torch.empty(rows, outFeatures, ScalarType.Float32)
            : bias.to(ScalarType.Float32).expand(rows, outFeatures).contiguous(); // (rows, out)
        if (inFeatures == 0 && bias is null) product.zero_();
        else if (rows > 0 && outFeatures > 0 && inFeatures > 0)
        {
            // In blocks of output columns. One call over OPT-1.3B's whole vocabulary (32 rows) took 725-853 ms at most
            // decode steps of a run and 146 ms at the others, and 900 ms on its first call in a loop against 100-140 after:
            // the cost of fresh memory the size of the weight widened to float32 (412 MB), which this VM faults in at well
            // under 1 GB/s. In blocks of at most 8 MiB widened: 74-98 ms, every step. A block has at least 4 columns per
            // row, since each block takes the activations again.
            long block = (Math.Max(WidenedBlockBytes / (sizeof(float) * inFeatures), 4 * rows) + 63) / 64 * 64;
            var aData = TensorMemory.Address(a);
            var bData = (byte*)TensorMemory.Address(b);
            var cData = (float*)TensorMemory.Address(product);
            long columnStride = transB == Trans ? ldb : 1; // elements between the weight's consecutive outputs
            for (long n0 = 0; n0 < outFeatures; n0 += block)
            {
                api.Gemm(transB, (int)rows, (int)Math.Min(block, outFeatures - n0), (int)inFeatures, aData, (int)a.stride(0),
                    bData + (n0 * columnStride * sizeof(ushort)), (int)ldb, beta: bias is null ? 0f : 1f, cData + n0, (int)outFeatures);
            }
        }

        var result = product.to(ScalarType.BFloat16).view([.. x.shape[..^1], outFeatures]); // (..., out)
        return result.MoveToOuterDisposeScope();
    }

    private static bool IsCpuBFloat16(Tensor t) => t.dtype == ScalarType.BFloat16 && t.device.type == DeviceType.CPU;

    // MKL's LP64 interface takes 32-bit sizes and strides.
    private static bool FitsMkl(Tensor x, Tensor weight) =>
        x.numel() <= int.MaxValue && weight.numel() <= int.MaxValue && weight.dim() == 2
        && weight.stride(0) <= int.MaxValue && weight.stride(1) <= int.MaxValue;

    private sealed class Api(IntPtr gemmBf16)
    {
        public static Api? Find() =>
            LoadedLibrary.Exports(LoadedLibrary.Find("libtorch_cpu"), "cblas_gemm_bf16bf16f32") is [var gemm] && TensorMemory.AddressAvailable
                ? new Api(gemm)
                : null;

        /// <summary>C (m, n) = A (m, k) @ op(B) + beta C, row-major, bfloat16 A and B, float32 C with row stride ldc.</summary>
        public void Gemm(int transB, int m, int n, int k, void* a, int lda, void* b, int ldb, float beta, float* c, int ldc) =>
            ((delegate* unmanaged<int, int, int, int, int, int, float, void*, int, void*, int, float, float*, int, void>)gemmBf16)(
                RowMajor, NoTrans, transB, m, n, k, 1f, a, lda, b, ldb, beta, c, ldc);

    }
}
