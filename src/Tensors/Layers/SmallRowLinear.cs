namespace FlexGen.Tensors.Layers;

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;
using static FlexGen.Tensors.Layers.CpuKernels;

/// <summary>
/// Linear layers over a few rows (decode at small batches: 1 to <see cref="MaxRows"/>) on the CPU, float32 or bfloat16
/// weights, float32 sums: an AVX2 kernel run on libtorch's own OpenMP team (libgomp's <c>GOMP_parallel</c>, the entry a
/// compiler emits for <c>#pragma omp parallel</c>), so it shares the team and its spinning workers with every other
/// operation of the step. At these rows each weight element is used a few times, so the product is a stream of the
/// weight through the cores; libtorch's float32 matmul (MKL) and MKL's bfloat16 GEMM reached 15-35 GFLOP/s there,
/// 4-9 GB/s of a float32 weight, where this VM's memory gives 26-28 GB/s to two threads (a 1 GiB sum). Measured on the
/// 2-core AVX2 EPYC (Zen 3), 2 threads, 8 rows, (3072 x 768) weights out of cache (24 copies in turn): float32 (MKL)
/// 1.1-2.5 ms over 9 runs -> 0.77, bfloat16 (MKL) 1.0-1.4 -> 0.61. A bfloat16 weight is widened in registers (its
/// bits are a float32's upper half), so it streams half the bytes of a float32 one; so is a float16 weight under float32
/// activations (a disk weight of a float32 compute, multiplied as read instead of widened whole first), exactly, so its
/// products equal those of the weight widened first. Results are the float32 sums plus
/// the bias, rounded once to bfloat16 where the operands are bfloat16, as libtorch's and MKL's products are; only the
/// order of the sums differs.
/// </summary>
internal static unsafe class SmallRowLinear
{
    /// <summary>The most rows (activation vectors) a product takes here; more go to libtorch, which is faster from 16.</summary>
    public const int MaxRows = 8;

    /// <summary>True when the CPU has AVX2 and FMA and libtorch's libgomp and TorchSharp's data pointer were found.</summary>
    public static bool Available => CpuKernels.Available;

    /// <summary>
    /// <paramref name="x"/> (..., in) @ <paramref name="weight"/> (out, in)^T + <paramref name="bias"/> (out) -> (..., out),
    /// contiguous, in x's dtype, where this kernel takes it: <see cref="Available"/>, all on the CPU, x float32 with a
    /// float32 or float16 weight or all bfloat16 (the bias in x's or the weight's dtype), 1 to <see cref="MaxRows"/> rows,
    /// a row-major contiguous weight, in a multiple of 8; else null, and the caller multiplies with libtorch.
    /// </summary>
    public static Tensor? TryLinear(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!Takes(x, weight, bias) || !Available) return null;
        long inFeatures = x.shape[^1], outFeatures = weight.shape[0], rows = x.numel() / inFeatures;
        using var scope = NewDisposeScope();
        var a = x.reshape(rows, inFeatures).to(ScalarType.Float32).contiguous(); // (rows, in)
        var b = bias?.to(ScalarType.Float32).contiguous(); // (out)
        var product = torch.empty(rows, outFeatures, ScalarType.Float32); // (rows, out)
        var job = new Job
        {
            X = (float*)TensorMemory.Address(a),
            W = (byte*)TensorMemory.Address(weight),
            B = b is null ? null : (float*)TensorMemory.Address(b),
            Y = (float*)TensorMemory.Address(product),
            In = (int)inFeatures,
            Out = (int)outFeatures,
            Rows = (int)rows,
            Weight = weight.dtype,
        };

        OpenMpTeams.Parallel(&RunOnTeam, &job);

        var result = (x.dtype == ScalarType.Float32 ? product : product.to(x.dtype)).view([.. x.shape[..^1], outFeatures]); // (..., out)
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Whether the operands are of the kind <see cref="TryLinear"/> multiplies (whatever this machine has).</summary>
    internal static bool Takes(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU) return false;
        if (x.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || !MultipliesAsStored(x.dtype, weight.dtype)) return false;
        if (x.dim() == 0 || weight.dim() != 2) return false;
        long inFeatures = weight.shape[1], outFeatures = weight.shape[0];
        if (x.shape[^1] != inFeatures || inFeatures == 0 || inFeatures % Lanes != 0 || inFeatures > int.MaxValue) return false;
        if (outFeatures == 0 || outFeatures > int.MaxValue || weight.stride(1) != 1 || weight.stride(0) != inFeatures) return false;
        long rows = x.numel() / inFeatures;
        if (rows < 1 || rows > MaxRows) return false;
        return bias is null || (bias.device_type == DeviceType.CPU && (bias.dtype == x.dtype || bias.dtype == weight.dtype) && bias.dim() == 1 && bias.shape[0] == outFeatures);
    }

    /// <summary>
    /// Whether a weight of dtype <paramref name="weight"/> multiplies activations of dtype <paramref name="activations"/>
    /// here as stored: its own dtype, or float16 under float32 (a disk weight left as read, widened in registers).
    /// </summary>
    internal static bool MultipliesAsStored(ScalarType activations, ScalarType weight) =>
        weight == activations || (activations == ScalarType.Float32 && weight == ScalarType.Float16);

    // One product: float32 activations (Rows, In), the weight's rows (Out, In) in float32, bfloat16 or float16, an optional float32
    // bias, float32 output (Rows, Out). Read by every thread of the team while the caller waits in GOMP_parallel.
    private struct Job
    {
        public float* X;
        public byte* W;
        public float* B;
        public float* Y;
        public int In;
        public int Out;
        public int Rows;
        public ScalarType Weight;
    }

    // Each thread of the team takes its share of the output columns, in whole tiles of two.
    [UnmanagedCallersOnly]
    private static void RunOnTeam(void* data)
    {
        var job = (Job*)data;
        var (first, end) = OpenMpTeams.ShareOf(job->Out, 2);
        switch (job->Weight)
        {
            case ScalarType.BFloat16: Columns<BFloat16Element>(job, first, end); break;
            case ScalarType.Float16: Columns<Float16Element>(job, first, end); break;
            default: Columns<Float32Element>(job, first, end); break;
        }
    }

    // Tiles of 2 output columns, each over the rows in blocks of four (while a tile's weight rows are in cache, every
    // block takes them) and then one by one; a last odd column alone.
    private static void Columns<TWeight>(Job* job, int first, int end)
        where TWeight : struct, IVectorElement
    {
        int o = first;
        for (; o + 2 <= end; o += 2)
        {
            int r = 0;
            for (; r + 4 <= job->Rows; r += 4) Tile4x2<TWeight>(job, r, o);
            for (; r < job->Rows; r++) Tile1x2<TWeight>(job, r, o);
        }

        for (; o < end; o++)
        {
            for (int r = 0; r < job->Rows; r++) Tile1x1<TWeight>(job, r, o);
        }
    }

    // Rows [r, r + 4) x columns [o, o + 2): 8 accumulators, 2 weight vectors and one activation vector. With 12
    // accumulators (4 x 3, all 16 registers) the JIT kept 9 of them in memory, a store each per step: 30% slower.
    private static void Tile4x2<TWeight>(Job* job, int r, int o)
        where TWeight : struct, IVectorElement
    {
        int n = job->In;
        float* x0 = job->X + ((long)r * n), x1 = x0 + n, x2 = x1 + n, x3 = x2 + n;
        byte* w0 = job->W + ((long)o * n * TWeight.Size), w1 = w0 + ((long)n * TWeight.Size);
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        long ahead = 2L * n * TWeight.Size; // the next tile's weight rows
        for (int i = 0; i < n; i += Lanes)
        {
            Prefetch(w0 + ahead + (i * TWeight.Size), w1 + ahead + (i * TWeight.Size));
            var v0 = TWeight.Load(w0, i);
            var v1 = TWeight.Load(w1, i);
            var xv = Avx.LoadVector256(x0 + i);
            a00 = Fma.MultiplyAdd(xv, v0, a00);
            a01 = Fma.MultiplyAdd(xv, v1, a01);
            xv = Avx.LoadVector256(x1 + i);
            a10 = Fma.MultiplyAdd(xv, v0, a10);
            a11 = Fma.MultiplyAdd(xv, v1, a11);
            xv = Avx.LoadVector256(x2 + i);
            a20 = Fma.MultiplyAdd(xv, v0, a20);
            a21 = Fma.MultiplyAdd(xv, v1, a21);
            xv = Avx.LoadVector256(x3 + i);
            a30 = Fma.MultiplyAdd(xv, v0, a30);
            a31 = Fma.MultiplyAdd(xv, v1, a31);
        }

        Store(job, r, o, a00, a01);
        Store(job, r + 1, o, a10, a11);
        Store(job, r + 2, o, a20, a21);
        Store(job, r + 3, o, a30, a31);
    }

    private static void Tile1x2<TWeight>(Job* job, int r, int o)
        where TWeight : struct, IVectorElement
    {
        int n = job->In;
        float* x0 = job->X + ((long)r * n);
        byte* w0 = job->W + ((long)o * n * TWeight.Size), w1 = w0 + ((long)n * TWeight.Size);
        Vector256<float> a0 = default, a1 = default;
        long ahead = 2L * n * TWeight.Size; // the next tile's weight rows
        for (int i = 0; i < n; i += Lanes)
        {
            Prefetch(w0 + ahead + (i * TWeight.Size), w1 + ahead + (i * TWeight.Size));
            var xv = Avx.LoadVector256(x0 + i);
            a0 = Fma.MultiplyAdd(xv, TWeight.Load(w0, i), a0);
            a1 = Fma.MultiplyAdd(xv, TWeight.Load(w1, i), a1);
        }

        Store(job, r, o, a0, a1);
    }

    private static void Tile1x1<TWeight>(Job* job, int r, int o)
        where TWeight : struct, IVectorElement
    {
        int n = job->In;
        float* x0 = job->X + ((long)r * n);
        byte* w0 = job->W + ((long)o * n * TWeight.Size);
        Vector256<float> a0 = default;
        for (int i = 0; i < n; i += Lanes) a0 = Fma.MultiplyAdd(Avx.LoadVector256(x0 + i), TWeight.Load(w0, i), a0);
        job->Y[((long)r * job->Out) + o] = Vector256.Sum(a0) + (job->B is null ? 0f : job->B[o]);
    }

    // The next tile's weight rows at the offset this tile reads: a row of 2048 two-byte values is one 4 KiB page, and the
    // hardware prefetcher, which stops at a page's end, kept retraining on each. 2-core Zen 5 VM, 2 threads, 2048 x 8192
    // weights out of cache, medians of three alternating runs: 1 row float32 2.27 -> 1.33 ms, float16 1.98 -> 1.57; 4 rows
    // float32 2.82 -> 1.48, bfloat16 1.88 -> 1.24, float16 2.36 -> 1.86; 8 rows float32 3.57 -> 2.69, bfloat16 2.75 -> 2.47.
    // A prefetch past the weight's end is a hint only, not a fault.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* next0, byte* next1)
    {
        Sse.Prefetch0(next0);
        Sse.Prefetch0(next1);
    }

    private static void Store(Job* job, int row, int o, Vector256<float> c0, Vector256<float> c1)
    {
        float* y = job->Y + ((long)row * job->Out) + o;
        float* bias = job->B;
        y[0] = Vector256.Sum(c0) + (bias is null ? 0f : bias[o]);
        y[1] = Vector256.Sum(c1) + (bias is null ? 0f : bias[o + 1]);
    }
}
