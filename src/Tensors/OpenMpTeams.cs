namespace FlexGen.Tensors;

using TorchSharp;

/// <summary>
/// Which threads run libtorch's OpenMP parallel regions. libgomp (libtorch's OpenMP on Linux) keeps a team of worker
/// threads for every thread that has ever run a parallel region, and lets workers spin between regions only while the
/// process's OpenMP threads are no more than the cores; past that it throttles them to ~100 spins, so every region
/// (each matmul, each large elementwise operation) waits for a sleeping worker to be woken. One parallel operation on
/// any other thread is enough: on the 2-core VM it made a plain OPT-125m decode loop (12 layers, 32 rows, float32)
/// 1.4-2x slower (61-88 -> 124-125 ms a step), and an OPT-125m bench had three teams (the compute actor's, the model
/// load's on a pool thread, and one more on a pinned actor thread). So the pipeline keeps parallel regions on its compute threads:
/// the other actors' threads run libtorch serially (<see cref="KeepSerial"/>) and the load releases its team when done
/// (<see cref="Release"/>). Where libtorch has no libgomp (not Linux) both do nothing.
/// </summary>
public static class OpenMpTeams
{
    private static readonly Lazy<OpenMp?> Library = new(OpenMp.Find);

    /// <summary>True when libtorch's libgomp was found, so the calls below take effect.</summary>
    public static bool Available => Library.Value is not null;

    /// <summary>
    /// OpenMP's thread count for parallel regions started on the calling thread (libgomp's per-thread setting), or null
    /// without libgomp.
    /// </summary>
    public static int? ThreadsHere => Library.Value?.MaxThreads();

    /// <summary>
    /// libtorch's operations on the calling thread run on it alone from now on: no OpenMP team is made for it. For
    /// threads that move or prepare data beside the compute (the pipeline's copy and disk actors, the coordinator).
    /// libtorch's process-wide intra-op count and the other threads' settings are left as they are.
    /// </summary>
    public static void KeepSerial()
    {
        if (Library.Value is not { } omp) return;
        // libtorch sets each thread's OpenMP count from its process-wide one at the thread's first parallel query;
        // that first query happens here, so it cannot undo the setting below later.
        torch.get_num_threads();
        omp.SetThreads(1);
    }

    /// <summary>
    /// Ends the OpenMP team the calling thread made (its worker threads exit); the next parallel region on this thread
    /// makes a new one. For a thread that ran parallel work once and goes on to other things (the model load).
    /// </summary>
    public static void Release() => Library.Value?.PauseSoft();

    /// <summary>
    /// Runs <paramref name="work"/>(<paramref name="data"/>) on every thread of the calling thread's OpenMP team, the team
    /// libtorch's own operations on this thread use (libgomp's <c>GOMP_parallel</c>, what a compiler emits for
    /// <c>#pragma omp parallel</c>), with the thread count they use (<c>torch.get_num_threads</c>; on a thread kept serial
    /// 1: then the calling thread runs it alone). Returns when every thread is done. Each thread takes its part with
    /// <see cref="ShareOf"/>. Our own kernels run this way so they share the team and its spinning workers with the step's
    /// other operations instead of waking threads of their own.
    /// </summary>
    /// <exception cref="InvalidOperationException">libgomp was not found (<see cref="Available"/> is false).</exception>
    internal static unsafe void Parallel(delegate* unmanaged<void*, void> work, void* data)
    {
        var omp = Library.Value ?? throw new InvalidOperationException("libtorch's libgomp was not found: no OpenMP team to run on.");
        int threads = torch.get_num_threads();
        if (threads <= 1) work(data);
        else omp.Parallel(work, data, threads);
    }

    /// <summary>
    /// The calling thread's part [First, End) of <paramref name="count"/> items, in whole runs of <paramref name="unit"/>
    /// (the last may be shorter), inside <see cref="Parallel"/>'s work; all of them on a thread that runs it alone.
    /// </summary>
    internal static (int First, int End) ShareOf(int count, int unit = 1)
    {
        var (thread, threads) = Member();
        int units = (count + unit - 1) / unit, perThread = (units + threads - 1) / threads;
        int first = (int)Math.Min(count, (long)thread * perThread * unit);
        return (first, (int)Math.Min(count, first + ((long)perThread * unit)));
    }

    /// <summary>
    /// Inside <see cref="Parallel"/>'s work: the calling thread's number in its team (0 on a thread that runs it alone) and
    /// the team's size, at most the <c>torch.get_num_threads</c> that Parallel read.
    /// </summary>
    internal static (int Thread, int Threads) Member()
    {
        var omp = Library.Value ?? throw new InvalidOperationException("libtorch's libgomp was not found: no OpenMP team to run on.");
        return (omp.ThreadNumber(), omp.TeamSize());
    }

    private sealed class OpenMp(IntPtr setNumThreads, IntPtr getMaxThreads, IntPtr pauseResourceAll, IntPtr parallel, IntPtr threadNumber, IntPtr teamSize)
    {
        private const int OmpPauseSoft = 1; // omp_pause_soft

        public static OpenMp? Find() =>
            LoadedLibrary.Exports(LoadedLibrary.Find("libgomp"), "omp_set_num_threads", "omp_get_max_threads", "omp_pause_resource_all",
                    "GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
                is [var set, var get, var pause, var run, var number, var size]
                ? new OpenMp(set, get, pause, run, number, size)
                : null;

        /// <summary>work(data) on this thread's team of <paramref name="threads"/>; returns when all are done.</summary>
        public unsafe void Parallel(delegate* unmanaged<void*, void> work, void* data, int threads) =>
            ((delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel)(work, data, (uint)threads, 0);

        public unsafe int ThreadNumber() => ((delegate* unmanaged<int>)threadNumber)();

        public unsafe int TeamSize() => ((delegate* unmanaged<int>)teamSize)();

        public unsafe void SetThreads(int threads) => ((delegate* unmanaged<int, void>)setNumThreads)(threads);

        public unsafe int MaxThreads() => ((delegate* unmanaged<int>)getMaxThreads)();

        public unsafe void PauseSoft() => _ = ((delegate* unmanaged<int, int>)pauseResourceAll)(OmpPauseSoft);
    }
}
