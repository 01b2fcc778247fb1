namespace FlexGen.Tensors;

using System.Globalization;
using TorchSharp;

/// <summary>Facts about the loaded libtorch that the rest of the code asks for in one place.</summary>
public static class TorchRuntime
{
    /// <summary>True when libtorch sees a CUDA device.</summary>
    public static bool CudaAvailable => torch.cuda.is_available();

    /// <summary>The most threads a thread-count setting (compute or disk I/O) accepts.</summary>
    public const int MaxThreads = 1024;

    /// <summary>True for a thread count in 1..<see cref="MaxThreads"/>.</summary>
    public static bool IsValidThreadCount(int threads) => threads is >= 1 and <= MaxThreads;

    /// <summary>
    /// libtorch's intra-op threads when none are given: <c>OMP_NUM_THREADS</c> when it holds a valid count (the
    /// variable users already set for libtorch), else every core, <see cref="Environment.ProcessorCount"/>, less one
    /// left to the disk tier when <paramref name="leaveCoreToDisk"/> (a policy that reads or writes the disk every
    /// step, <see cref="Policies.Policy.StreamsFromDisk"/>). The disk's reads need a core of their own: on the 2-core VM,
    /// OPT-1.3B bfloat16 32 x 2 with weights on disk read 3.7-4.0 GB/s beside 1 compute thread and 1.8-2.4 beside 2
    /// (decode 67-72 against 41-54 token/s); with overlap the compute's busy time grew 6% instead of 31%.
    /// </summary>
    public static int DefaultComputeThreadsFor(bool leaveCoreToDisk) =>
        ComputeThreadsOf(Environment.GetEnvironmentVariable("OMP_NUM_THREADS"), leaveCoreToDisk, Environment.ProcessorCount);

    /// <summary>
    /// The default rule for an <c>OMP_NUM_THREADS</c> value on <paramref name="cores"/> cores: a count in
    /// 1..<see cref="MaxThreads"/> is used; anything else (unset, empty, "4,2" nesting lists, 0) is ignored, as libtorch
    /// itself falls back to its default then, and every core is used, but one when <paramref name="leaveCoreToDisk"/>
    /// and there are at least two.
    /// </summary>
    public static int ComputeThreadsOf(string? ompNumThreads, bool leaveCoreToDisk, int cores) =>
        int.TryParse(ompNumThreads?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int threads) && IsValidThreadCount(threads)
            ? threads
            : Math.Min(leaveCoreToDisk && cores >= 2 ? cores - 1 : Math.Max(cores, 1), MaxThreads);

    /// <summary>
    /// Whether this machine's CPU multiplies bfloat16 in hardware: true or false read from <c>/proc/cpuinfo</c>
    /// (<see cref="HasBFloat16MatrixInstructions"/>), null where that cannot be told (not Linux, no flags line). Without
    /// such instructions libtorch (oneDNN) emulates bfloat16 matmuls: on the 2-core AVX2 EPYC (Zen 3) a 2048 x 8192
    /// linear ran at 18-19 GFLOP/s in bfloat16 against 72-143 in float32 at 64-1024 rows; so the engine multiplies
    /// through MKL there when it can (<see cref="CpuBFloat16ThroughMkl"/>).
    /// </summary>
    public static bool? CpuMultipliesBFloat16 => CpuBFloat16.Value;

    /// <summary>
    /// True when bfloat16 linears on the CPU multiply through Intel MKL's bfloat16 GEMM here instead of libtorch's
    /// emulation: the CPU is known to lack bfloat16 instructions and this libtorch exports MKL's
    /// <c>cblas_gemm_bf16bf16f32</c> (<see cref="Layers.MklBFloat16Gemm"/>; about float32's rate against a fifth of it).
    /// </summary>
    public static bool CpuBFloat16ThroughMkl => Layers.MklBFloat16Gemm.Used;

    private static readonly Lazy<bool?> CpuBFloat16 =
        new(() => CpuInfo.Read() is { } cpuinfo ? HasBFloat16MatrixInstructions(cpuinfo) : null);

    /// <summary>
    /// Reads a <c>/proc/cpuinfo</c> text: true when its first CPU lists a bfloat16 matrix instruction set (x86
    /// <c>avx512_bf16</c> or <c>amx_bf16</c> in <c>flags</c>; arm64 <c>bf16</c> in <c>Features</c>), false when it lists
    /// its flags without one, null when it has no flags line.
    /// </summary>
    public static bool? HasBFloat16MatrixInstructions(string cpuinfo)
    {
        ArgumentNullException.ThrowIfNull(cpuinfo);
        static string[] Split(string flags) => flags.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (CpuInfo.Value(cpuinfo, "flags") is { } x86) return Split(x86) is var f && (f.Contains("avx512_bf16") || f.Contains("amx_bf16"));
        if (CpuInfo.Value(cpuinfo, "Features") is { } arm) return Split(arm).Contains("bf16");
        return null;
    }

    /// <summary>libtorch's intra-op threads now (process-wide).</summary>
    public static int ComputeThreads => torch.get_num_threads();

    /// <summary>
    /// Sets libtorch's intra-op threads (process-wide). Inter-op threads are left alone: libtorch refuses to change them
    /// once any parallel work has started, and the pipeline's concurrency comes from its actors, not from inter-op tasks.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">not in 1..<see cref="MaxThreads"/>.</exception>
    public static void SetComputeThreads(int threads)
    {
        if (!IsValidThreadCount(threads)) throw new ArgumentOutOfRangeException(nameof(threads), threads, $"must be in 1..{MaxThreads}.");
        if (torch.get_num_threads() != threads) torch.set_num_threads(threads);
    }
}
