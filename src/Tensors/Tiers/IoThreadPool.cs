namespace FlexGen.Tensors.Tiers;

using System.Collections.Concurrent;

/// <summary>
/// The disk tier's I/O threads (FlexGen's <c>TorchDisk</c> copy threads): a fixed number of dedicated threads that run
/// the chunks of large disk transfers, so blocking reads and writes never tie up the .NET thread pool and no more than
/// <see cref="ThreadCount"/> of them run at once besides the callers' own threads.
/// </summary>
internal sealed class IoThreadPool : IDisposable
{
    private readonly BlockingCollection<Action> _work = new();
    private readonly Thread[] _threads;

    public IoThreadPool(int threadCount, string name = "disk-io")
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threadCount, 1);
        _threads = new Thread[threadCount];
        for (var i = 0; i < threadCount; i++)
        {
            _threads[i] = new Thread(Work) { IsBackground = true, Name = $"{name}-{i}" };
            _threads[i].Start();
        }
    }

    public int ThreadCount => _threads.Length;

    /// <summary>
    /// Queues <paramref name="work"/> (which must not throw) for a pool thread; false when the pool is shut down, and
    /// the work never runs.
    /// </summary>
    public bool TryQueue(Action work)
    {
        try
        {
            _work.Add(work);
            return true;
        }
        catch (InvalidOperationException)
        {
            return false; // shut down (CompleteAdding called, or already disposed)
        }
    }

    /// <summary>
    /// Runs <paramref name="chunk"/>(0 .. <paramref name="count"/> - 1), each once: the calling thread and up to
    /// <paramref name="parallel"/> - 1 helpers queued on this pool take the next chunk until none is left or one has
    /// failed. Returns once every helper that started has finished (helpers still queued then find nothing to do, so a
    /// caller never waits on a busy pool); the first failure is rethrown.
    /// </summary>
    public void RunChunks(int count, int parallel, Action<int> chunk)
    {
        var helpers = Math.Min(parallel, count) - 1;
        if (helpers <= 0)
        {
            for (var i = 0; i < count; i++)
            {
                chunk(i);
            }

            return;
        }

        var gate = new object();
        var next = -1;
        var running = 0;
        var closed = false;
        Exception? failure = null;
        void Drain()
        {
            int i;
            while (Volatile.Read(ref failure) is null && (i = Interlocked.Increment(ref next)) < count)
            {
                try
                {
                    chunk(i);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            }
        }

        void Help()
        {
            lock (gate)
            {
                if (closed)
                {
                    return;
                }

                running++;
            }

            Drain();
            lock (gate)
            {
                running--;
                Monitor.PulseAll(gate);
            }
        }

        for (var h = 0; h < helpers && TryQueue(Help); h++)
        {
        }

        Drain();
        lock (gate)
        {
            closed = true;
            while (running > 0)
            {
                Monitor.Wait(gate);
            }
        }

        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    /// <summary>Lets queued work finish, then stops the threads.</summary>
    public void Dispose()
    {
        if (_work.IsAddingCompleted)
        {
            return;
        }

        _work.CompleteAdding();
        foreach (var thread in _threads)
        {
            if (thread != Thread.CurrentThread)
            {
                thread.Join();
            }
        }

        _work.Dispose();
    }

    private void Work()
    {
        foreach (var item in _work.GetConsumingEnumerable())
        {
            item();
        }
    }
}
