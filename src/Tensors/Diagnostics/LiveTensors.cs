namespace FlexGen.Tensors.Diagnostics;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Live TorchSharp tensor counts, for leak tests: take a count, run the code, dispose what it returned, and
/// compare. Two views, because tests run in parallel: <see cref="OnThisThread"/> counts only tensors created and
/// disposed on the calling thread (TorchSharp's per-thread <c>DisposeScopeManager.Statistics</c>), so other tests
/// running at the same time do not disturb it; <see cref="InProcess"/> counts every live tensor handle in the
/// process (<c>Tensor.TotalCount</c>), for code that creates tensors on one thread and disposes them on another.
/// </summary>
public static class LiveTensors
{
    /// <summary>Tensors created on this thread and not yet disposed (tensors disposed on another thread stay counted).</summary>
    public static long OnThisThread => DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;

    /// <summary>Tensor handles alive in the whole process, on every thread (disturbed by concurrently running code).</summary>
    public static long InProcess => Tensor.TotalCount;

    /// <summary>
    /// Runs <paramref name="action"/> and returns how many tensors it left alive on this thread (0 when it
    /// disposed, or handed back and the caller disposed, everything it created).
    /// </summary>
    public static long LeakedBy(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        long before = OnThisThread;
        action();
        return OnThisThread - before;
    }
}
