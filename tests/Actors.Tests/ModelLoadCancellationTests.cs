namespace FlexGen.Actors.Tests;

using System.Diagnostics;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Numerics;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Tiers;
using FlexGen.Tensors.Policies;

/// <summary>A request cancelled while its model loads: the load stops, frees what it loaded, and the next request works.</summary>
public class ModelLoadCancellationTests : IClassFixture<RandomModelFixture>
{
    private static readonly TimeSpan Prompt = TimeSpan.FromSeconds(5);
    private readonly RandomModel _model;

    public ModelLoadCancellationTests(RandomModelFixture fixture) => _model = fixture.Model;

    [Fact]
    public async Task Cancelling_during_a_slow_load_should_signal_the_load_wait_for_its_cleanup_and_leave_the_system_usable()
    {
        var policy = TestPolicies.Offloaded(1, overlap: true, sep: false, cpuCacheCompute: false);
        using var loadStarted = new ManualResetEventSlim();
        int loads = 0;
        bool loadSawCancel = false, partialFreed = false;
        await using var flexgen = FlexGenSystem.Start(policy, (p, cancellationToken) =>
        {
            if (Interlocked.Increment(ref loads) > 1)
            {
                return new RecordingBackend(p, 1);
            }

            loadStarted.Set();
            try
            {
                // Stands for a long load: only the token ends it.
                loadSawCancel = cancellationToken.WaitHandle.WaitOne(TimeSpan.FromSeconds(30));
                cancellationToken.ThrowIfCancellationRequested();
                return new RecordingBackend(p, 1);
            }
            finally
            {
                partialFreed = true;
            }
        }, name: "slow-load");

        using var cancel = new CancellationTokenSource();
        var first = flexgen.GenerateAsync(new GenerateRequest { PromptIds = TestPolicies.Prompts(2), Generation = new(2) }, cancel.Token);
        Assert.True(loadStarted.Wait(Prompt));
        var clock = Stopwatch.StartNew();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
        Assert.True(clock.Elapsed < Prompt, $"cancellation took {clock.Elapsed}");
        Assert.True(loadSawCancel);
        Assert.True(partialFreed); // the reply came after the load gave up

        var next = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = TestPolicies.Prompts(2), Generation = new(2) });
        Assert.Equal(2, next.OutputIds.Length);
        Assert.Equal(2, loads);
    }

    [Fact]
    public async Task Cancelling_while_a_real_model_loads_should_stop_the_load_and_delete_its_offload_files()
    {
        // A fifth of the weights on GPU, two on CPU, the rest on disk: the load writes offload files.
        var policy = new Policy { GpuBatchSize = 2, NumGpuBatches = 1, WGpuPercent = 20, WCpuPercent = 40, CacheGpuPercent = 100, CacheCpuPercent = 0, ActGpuPercent = 100, ActCpuPercent = 0 };
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = policy, OffloadDirectory = offload };
            using var firstLayerLoaded = new ManualResetEventSlim();
            int loads = 0;
            int layersLoadedBeforeCancel = 0, layerCount = 0;
            await using var flexgen = FlexGenSystem.Start(policy, (p, cancellationToken) =>
            {
                bool hold = Interlocked.Increment(ref loads) == 1;
                var progress = new SyncProgress(layer =>
                {
                    if (hold)
                    {
                        // The first load stalls after its first layer until the request is cancelled.
                        layersLoadedBeforeCancel = layer.Layer + 1;
                        layerCount = layer.LayerCount;
                        firstLayerLoaded.Set();
                        cancellationToken.WaitHandle.WaitOne(TimeSpan.FromSeconds(30));
                    }
                });
                return TorchPipelineBackend.Create(settings, p, progress, cancellationToken);
            }, name: "real-load-cancel");

            using var cancel = new CancellationTokenSource();
            var (ids, mask) = _model.Prompts(2, 4);
            var request = new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(2) };
            var first = flexgen.GenerateAsync(request, cancel.Token);
            Assert.True(firstLayerLoaded.Wait(Prompt));
            Assert.NotEmpty(Directory.EnumerateFileSystemEntries(offload)); // the load's offload folder exists
            var clock = Stopwatch.StartNew();
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
            Assert.True(clock.Elapsed < Prompt, $"cancellation took {clock.Elapsed}");
            Assert.Empty(Directory.EnumerateFileSystemEntries(offload)); // the partly loaded model was disposed
            Assert.True(layersLoadedBeforeCancel < layerCount, $"the load stopped part way ({layersLoadedBeforeCancel} of {layerCount} layers)");

            var next = await flexgen.GenerateAsync(request with { RequestId = Guid.NewGuid() });
            Assert.Equal(2, next.OutputIds.Length);
            Assert.Equal(2, loads);
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    [Fact]
    public void TorchPipelineBackend_create_should_throw_on_a_cancelled_token_and_leave_no_offload_folder()
    {
        var policy = new Policy { GpuBatchSize = 2, NumGpuBatches = 1, WGpuPercent = 20, WCpuPercent = 40, CacheGpuPercent = 100, CacheCpuPercent = 0, ActGpuPercent = 100, ActCpuPercent = 0 };
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = policy, OffloadDirectory = offload };
            using var cancel = new CancellationTokenSource();
            var progress = new SyncProgress(_ => cancel.Cancel());
            Assert.ThrowsAny<OperationCanceledException>(() => TorchPipelineBackend.Create(settings, policy, progress, cancel.Token));
            Assert.Empty(Directory.EnumerateFileSystemEntries(offload));
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    /// <summary>Reports on the loading thread (Progress&lt;T&gt; would post elsewhere).</summary>
    private sealed class SyncProgress(Action<WeightLoadProgress> report) : IProgress<WeightLoadProgress>
    {
        public void Report(WeightLoadProgress value) => report(value);
    }
}
