namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class TierConcurrencyTests
{
    [Fact]
    public async Task Copies_should_run_concurrently_from_many_threads_without_mixing_data()
    {
        using var bed = new TierTestBed(directIo: true, chunkBytes: 16384);
        var mixed = bed.Tiers.CreateMixed(25, 25, 2);
        var workers = Enumerable.Range(0, 8).Select(worker => Task.Run(() =>
        {
            for (var round = 0; round < 4; round++)
            {
                using var data = TierTestBed.RandomTensor([16, 8, 300], ScalarType.Float16, worker * 100 + round);
                using var onDisk = bed.Tiers.Disk.Allocate(data.shape, data.dtype, $"w{worker}.r{round}");
                TierCopy.CopyFrom(onDisk, null, data);
                using var onMixed = TierCopy.CopyTo(onDisk, mixed);
                using var back = TierCopy.CopyTo(onMixed, bed.Tiers.Cpu);
                Assert.True(TierTestBed.BitEqual(data, ((DeviceTensor)back).Data), $"worker {worker} round {round}");
            }
        })).ToArray();
        await Task.WhenAll(workers);
        bed.AssertNothingLeft();
    }

    [Fact]
    public void Chunked_transfer_should_run_every_chunk_once_and_report_a_failing_chunk_after_all_helpers_finished()
    {
        using var bed = new TierTestBed();
        var disk = bed.Tiers.Disk;
        var runs = new int[40];
        var threads = new System.Collections.Concurrent.ConcurrentDictionary<int, byte>();
        disk.RunChunks(runs.Length, i =>
        {
            threads[Environment.CurrentManagedThreadId] = 0;
            Interlocked.Increment(ref runs[i]);
            Thread.Sleep(1);
        });
        Assert.All(runs, count => Assert.Equal(1, count));
        Assert.True(threads.Count > 1, "the caller shares chunks with the I/O threads");

        var active = 0;
        var error = Assert.Throws<IOException>(() => disk.RunChunks(40, i =>
        {
            Interlocked.Increment(ref active);
            try
            {
                Thread.Sleep(2);
                if (i == 5)
                {
                    throw new IOException("chunk 5");
                }
            }
            finally
            {
                Interlocked.Decrement(ref active);
            }
        }));
        Assert.Equal("chunk 5", error.Message);
        Assert.Equal(0, Volatile.Read(ref active)); // nothing still writing into the caller's buffer
        bed.AssertNothingLeft();
    }
}
