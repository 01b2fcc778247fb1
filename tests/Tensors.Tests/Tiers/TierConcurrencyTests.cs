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
        var workers = Enumerable.Range(0, 8).Select(worker => Task.Run(async () =>
        {
            for (var round = 0; round < 4; round++)
            {
                using var data = TierTestBed.RandomTensor([16, 8, 300], ScalarType.Float16, worker * 100 + round);
                using var onDisk = await TierCopy.StoreAsync(data, bed.Tiers.Disk, $"w{worker}.r{round}");
                using var onMixed = await TierCopy.CopyToAsync(onDisk, mixed);
                using var back = await TierCopy.CopyToAsync(onMixed, bed.Tiers.Cpu);
                Assert.True(TierTestBed.BitEqual(data, ((DeviceTensor)back).Data), $"worker {worker} round {round}");
            }
        })).ToArray();
        await Task.WhenAll(workers);
        bed.AssertNothingLeft();
    }

    [Fact]
    public async Task Cancelled_copies_should_free_their_buffers_and_new_tensors()
    {
        using var bed = new TierTestBed();
        await CancelMany(bed);
        bed.AssertNothingLeft();
    }

    private static async Task CancelMany(TierTestBed bed)
    {
        using var data = TierTestBed.RandomTensor([64, 1024], ScalarType.Float32, 1);
        using var source = bed.Tiers.Cpu.CopyOf(data, "source");
        using var cancellation = new CancellationTokenSource();

        // Hold both I/O threads so every copy is still queued when the token is cancelled.
        using var gate = new ManualResetEventSlim();
        var blockers = Enumerable.Range(0, bed.Tiers.Disk.IoPool.ThreadCount).Select(_ => bed.Tiers.Disk.IoPool.RunAsync(gate.Wait)).ToArray();
        var copies = Enumerable.Range(0, 32)
            .Select(i => TierCopy.CopyToAsync(source, bed.Tiers.Disk, [new(i, 64)], $"copy{i}", cancellation.Token))
            .ToList();
        cancellation.Cancel();
        gate.Set();
        await Task.WhenAll(blockers);
        var done = 0;
        var cancelled = 0;
        foreach (var copy in copies)
        {
            try
            {
                using var result = await copy;
                done++;
            }
            catch (OperationCanceledException)
            {
                cancelled++;
            }
        }

        Assert.Equal(0, done);
        Assert.Equal(32, cancelled);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => TierCopy.CopyToAsync(source, bed.Tiers.Disk, cancellationToken: cancellation.Token));
    }
}
