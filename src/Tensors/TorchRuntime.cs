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
    /// variable users already set for libtorch), else every core, <see cref="Environment.ProcessorCount"/>. On a
    /// 2-core machine 1 thread halves prefill and slows decode; with weights streamed from disk the I/O threads wait
    /// on the disk, not on a core, so a core left to them gains nothing.
    /// </summary>
    public static int DefaultComputeThreads => ComputeThreadsOf(Environment.GetEnvironmentVariable("OMP_NUM_THREADS"));

    /// <summary>
    /// The default rule for an <c>OMP_NUM_THREADS</c> value: a count in 1..<see cref="MaxThreads"/> is used; anything
    /// else (unset, empty, "4,2" nesting lists, 0) is ignored, as libtorch itself falls back to its default then.
    /// </summary>
    public static int ComputeThreadsOf(string? ompNumThreads) =>
        int.TryParse(ompNumThreads?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int threads) && IsValidThreadCount(threads)
            ? threads
            : Math.Min(Environment.ProcessorCount, MaxThreads);

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
