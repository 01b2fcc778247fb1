namespace FlexGen.Tensors.Tiers;

using System.Collections.Concurrent;

/// <summary>
/// A fixed number of dedicated threads that run blocking disk I/O, so disk reads and writes are awaitable without
/// tying up the .NET thread pool, and no more than <see cref="ThreadCount"/> run at once.
/// </summary>
public sealed class IoThreadPool : IDisposable
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

    /// <summary>Runs <paramref name="io"/> on a pool thread; the task completes (or faults) when it has run.</summary>
    public Task RunAsync(Action io, CancellationToken cancellationToken = default) =>
        RunAsync<object?>(() =>
        {
            io();
            return null;
        }, cancellationToken);

    public Task<T> RunAsync<T>(Func<T> io, CancellationToken cancellationToken = default)
    {
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (cancellationToken.IsCancellationRequested)
        {
            completion.SetCanceled(cancellationToken);
            return completion.Task;
        }

        try
        {
            _work.Add(() =>
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    completion.TrySetCanceled(cancellationToken);
                    return;
                }

                try
                {
                    completion.TrySetResult(io());
                }
                catch (Exception e)
                {
                    completion.TrySetException(e);
                }
            });
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(IoThreadPool), "The disk I/O pool has been shut down.");
        }

        return completion.Task;
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
