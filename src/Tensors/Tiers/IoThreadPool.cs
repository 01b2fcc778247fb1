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
