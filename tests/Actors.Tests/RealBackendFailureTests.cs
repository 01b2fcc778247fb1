namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Numerics;
using FlexGen.Actors.Tests.Support;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Policies;

/// <summary>Faults and cancellation on the real backend: every tier freed, the request's offload files deleted.</summary>
public class RealBackendFailureTests : IClassFixture<RandomModelFixture>, IAsyncLifetime
{
    private readonly RandomModel _model;
    private readonly string _offload = Fixtures.NewOffloadDir();
    private FaultInjectingBackend? _backend;
    private FlexGenSystem? _flexgen;
    private (long[][] Ids, bool[][] Mask) _prompts;

    public RealBackendFailureTests(RandomModelFixture fixture) => _model = fixture.Model;

    public Task InitializeAsync()
    {
        // Weights split CPU/disk, cache mixed over three tiers with CPU attention, activations on disk: every actor works.
        var policy = new Policy
        {
            GpuBatchSize = 4, NumGpuBatches = 2, WGpuPercent = 20, WCpuPercent = 40, CacheGpuPercent = 30, CacheCpuPercent = 30,
            ActGpuPercent = 0, ActCpuPercent = 0, CpuCacheCompute = true,
        };
        var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = policy, OffloadDirectory = _offload };
        _flexgen = FlexGenSystem.Start(policy, p => _backend = new FaultInjectingBackend(TorchPipelineBackend.Create(settings, p)), name: "real-failures");
        _prompts = _model.Prompts(8, 6);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _flexgen!.DisposeAsync();
        Directory.Delete(_offload, recursive: true);
    }

    private GenerateRequest Request() => new() { PromptIds = _prompts.Ids.ToRows(), AttentionMask = _prompts.Mask.ToRows(), Generation = new(4) };

    private (long Gpu, long Cpu, long Disk, int Files) Usage()
    {
        var tiers = _backend!.Inner.Tiers;
        return (tiers.Gpu.Stats.CurrentBytes, tiers.Cpu.Stats.CurrentBytes, tiers.Disk.Stats.CurrentBytes,
            Directory.EnumerateFiles(_backend.Inner.OffloadFolder, "*", SearchOption.AllDirectories).Count());
    }

    public static TheoryData<TaskKind, int, int, int, PipelineActorKind> FaultPoints() => new()
    {
        { TaskKind.LoadWeight, 1, 3, 0, PipelineActorKind.DiskIo },
        { TaskKind.LoadCache, 2, 1, 1, PipelineActorKind.DiskIo },
        { TaskKind.ComputeLayer, 1, 3, 0, PipelineActorKind.CpuCompute },
        { TaskKind.ComputeLayer, 0, 5, 1, PipelineActorKind.GpuCompute },
        { TaskKind.StoreCache, 0, 3, 1, PipelineActorKind.Copy },
        { TaskKind.StoreHidden, 2, 4, 0, PipelineActorKind.DiskIo },
    };

    [Theory]
    [MemberData(nameof(FaultPoints))]
    public async Task A_fault_should_free_every_tier_delete_the_request_files_and_leave_the_system_usable(TaskKind kind, int i, int j, int k, PipelineActorKind tier)
    {
        var good = await _flexgen!.GenerateAsync(Request());
        var idle = Usage();

        var fault = new InvalidDataException("injected");
        _backend!.Fault = (task, t) => task == new BlockTask(kind, i, j, k) && t == tier ? fault : null;
        var error = await Assert.ThrowsAsync<GenerationFailedException>(() => _flexgen.GenerateAsync(Request()));
        Assert.Same(fault, error.InnerException);
        Assert.Equal(idle, Usage());

        _backend.Fault = null;
        var again = await _flexgen.GenerateAsync(Request());
        Assert.Equal(good.OutputIds.SelectMany(r => r), again.OutputIds.SelectMany(r => r));
        Assert.Equal(idle, Usage()); // a successful request leaves nothing behind either
    }

    [Theory]
    [InlineData(TaskKind.LoadHidden, 0, 0, 0)]
    [InlineData(TaskKind.ComputeLayer, 1, 2, 1)]
    [InlineData(TaskKind.StoreCache, 2, 7, 0)]
    public async Task Cancellation_should_free_every_tier_and_delete_the_request_files(TaskKind kind, int i, int j, int k)
    {
        var good = await _flexgen!.GenerateAsync(Request());
        var idle = Usage();
        using var cts = new CancellationTokenSource();
        _backend!.Fault = (task, _) =>
        {
            if (task == new BlockTask(kind, i, j, k))
            {
                cts.Cancel();
            }

            return null;
        };

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _flexgen.GenerateAsync(Request(), cts.Token));
        Assert.Equal(idle, Usage());
        _backend.Fault = null;
        var again = await _flexgen.GenerateAsync(Request());
        Assert.Equal(good.OutputIds.SelectMany(r => r), again.OutputIds.SelectMany(r => r));
    }

    /// <summary>The real backend with a hook that can fail (or act at) any task part.</summary>
    private sealed class FaultInjectingBackend(TorchPipelineBackend inner) : IPipelineBackend
    {
        public TorchPipelineBackend Inner { get; } = inner;

        public Func<BlockTask, PipelineActorKind, Exception?>? Fault { get; set; }

        public Policy Policy => Inner.Policy;

        public int PadTokenId => Inner.PadTokenId;

        public IReadOnlyDictionary<string, long> PeakBytes => Inner.PeakBytes;

        public BlockPlan Plan(BlockRequest block, int prefetchSteps) => Inner.Plan(block, prefetchSteps);

        public IPipelineRun CreateRun(RunId id, BlockRequest block, BlockPlan plan, TraceRecorder trace) => new Run(this, Inner.CreateRun(id, block, plan, trace));

        public void ResetPeaks() => Inner.ResetPeaks();

        public void Dispose() => Inner.Dispose();

        private sealed class Run(FaultInjectingBackend owner, IPipelineRun inner) : IPipelineRun
        {
            public RunId Id => inner.Id;

            public BlockRequest Block => inner.Block;

            public TraceRecorder Trace => inner.Trace;

            public bool IsCancelled => inner.IsCancelled;

            public PartResult Execute(BlockTask task, PipelineActorKind tier)
            {
                if (owner.Fault?.Invoke(task, tier) is { } fault)
                {
                    throw fault;
                }

                return inner.Execute(task, tier);
            }

            public void Release(BlockTask task, PipelineActorKind tier) => inner.Release(task, tier);

            public void Cancel() => inner.Cancel();

            public long[][] OutputIds() => inner.OutputIds();

            public void Dispose() => inner.Dispose();
        }
    }
}
