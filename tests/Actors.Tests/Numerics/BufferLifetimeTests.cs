namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;
using Xunit.Abstractions;

/// <summary>Every buffer event of every run of one actor system (requests run one at a time).</summary>
public sealed class RecordingBufferObserver : IBufferObserver
{
    private readonly List<BufferEvent> _events = new();

    public void OnEvent(BufferEvent e)
    {
        lock (_events)
        {
            _events.Add(e);
        }
    }

    /// <summary>The events recorded since the last call, per run, in the order each run's store made them.</summary>
    public IReadOnlyList<IReadOnlyList<BufferEvent>> TakeRuns()
    {
        lock (_events)
        {
            var runs = _events.GroupBy(e => e.Run).Select(g => (IReadOnlyList<BufferEvent>)g.ToArray()).ToArray();
            _events.Clear();
            return runs;
        }
    }
}

/// <summary>One actor system on opt-tiny whose backends report their buffer events.</summary>
public sealed class BufferLifetimeRuns : IAsyncLifetime
{
    private FlexGenSystem? _system;

    public RecordingBufferObserver Observer { get; } = new();

    public string OffloadDir { get; } = Fixtures.NewOffloadDir();

    public Task InitializeAsync()
    {
        var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = Fixtures.Policies()["all_gpu"], OffloadDirectory = OffloadDir };
        _system = FlexGenSystem.Start(settings.Policy, policy =>
        {
            var backend = TorchPipelineBackend.Create(settings, policy);
            backend.BufferObserver = Observer;
            return backend;
        }, name: "buffer-lifetimes");
        return Task.CompletedTask;
    }

    public async Task<(long[][] Tokens, IReadOnlyList<IReadOnlyList<BufferEvent>> Runs)> Generate(Policy policy)
    {
        Observer.TakeRuns();
        var result = await _system!.GenerateAsync(new GenerateRequest
        {
            PromptIds = Fixtures.PromptIds().ToRows(), AttentionMask = Fixtures.PromptMask().ToRows(), Generation = new(10), Policy = policy,
        });
        return (result.OutputIds.Select(r => r.ToArray()).ToArray(), Observer.TakeRuns());
    }

    public async Task DisposeAsync()
    {
        if (_system is not null)
        {
            await _system.DisposeAsync();
        }

        Directory.Delete(OffloadDir, recursive: true);
    }
}

/// <summary>
/// Buffer lifetimes over the policy matrix (weights, cache and activations on GPU / CPU / disk, mixed cache, CPU
/// attention, compressed weights and cache, sparse attention, overlap and sep_layer on and off, one to four GPU batches),
/// through the real actors and backend: every buffer is made by its kind's producer, freed exactly once within the release
/// of its last consumer part (or handed over by that part), nothing is left when the block ends, and the tokens are those
/// the policy tests expect.
/// </summary>
public class BufferLifetimeTests : IClassFixture<BufferLifetimeRuns>
{
    private readonly BufferLifetimeRuns _runs;
    private readonly ITestOutputHelper _output;

    public BufferLifetimeTests(BufferLifetimeRuns runs, ITestOutputHelper output)
    {
        _runs = runs;
        _output = output;
    }

    private static Policy Fixture(string name) => Fixtures.Policies()[name];

    private static Policy Variant(string fixture, double[] percent, int gpuBatchSize, int batches, bool overlap, bool sep, bool cpuCacheCompute) =>
        Policy.FromPercent(percent, gpuBatchSize, batches) with { Overlap = overlap, SepLayer = sep, CpuCacheCompute = cpuCacheCompute, PinWeight = Fixture(fixture).PinWeight };

    /// <summary>Case name, policy, and the FlexLLMGen fixture whose tokens a lossy policy is compared with (null: the Hugging Face tokens).</summary>
    public static TheoryData<string, string?> Cases() => new()
    {
        { "all_gpu", null },
        { "all_gpu_no_overlap_joint_layer", null },
        { "weights_disk_cache_cpu_cpu_compute", null },
        { "weights_split_3way_cache_cpu", null },
        { "cache_mixed_gpu_cpu_cpu_compute", null },
        { "act_on_cpu", null },
        { "compress_weight", "compress_weight" },
        { "compress_cache", "compress_cache" },
        { "compress_both_offloaded", "compress_both_offloaded" },
        { "compress_both_offloaded, no overlap, joint layers", "compress_both_offloaded" },
        { "sparse_attn_0.5_cache_disk", "sparse_attn_0.5_cache_disk" },
        { "sparse_attn_0.5_cache_disk, no overlap, joint layers", "sparse_attn_0.5_cache_disk" },
        { "all on disk, overlap, sep_layer", null },
        { "all on disk, one GPU batch, no overlap, joint layers", null },
        { "cache over three tiers, GPU attention, no overlap", null },
        { "cache on GPU and CPU with CPU attention, weights over three tiers, activations on disk, four GPU batches", null },
    };

    private static Policy PolicyOf(string name) => name switch
    {
        "compress_both_offloaded, no overlap, joint layers" => Fixture("compress_both_offloaded") with { Overlap = false, SepLayer = false },
        "sparse_attn_0.5_cache_disk, no overlap, joint layers" => Fixture("sparse_attn_0.5_cache_disk") with { Overlap = false, SepLayer = false },
        "all on disk, overlap, sep_layer" => Variant("all_gpu", [0, 0, 0, 0, 0, 0], 4, 2, overlap: true, sep: true, cpuCacheCompute: false),
        "all on disk, one GPU batch, no overlap, joint layers" => Variant("all_gpu", [0, 0, 0, 0, 0, 0], 4, 1, overlap: false, sep: false, cpuCacheCompute: false),
        "cache over three tiers, GPU attention, no overlap" => Variant("all_gpu", [100, 0, 25, 25, 100, 0], 4, 2, overlap: false, sep: true, cpuCacheCompute: false),
        "cache on GPU and CPU with CPU attention, weights over three tiers, activations on disk, four GPU batches" =>
            Variant("all_gpu", [30, 30, 50, 50, 0, 0], 2, 4, overlap: true, sep: false, cpuCacheCompute: true),
        _ => Fixture(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Every_buffer_should_be_freed_once_right_after_its_last_consumer_part(string name, string? lossyFixture)
    {
        var policy = PolicyOf(name);
        var (tokens, runs) = await _runs.Generate(policy);

        if (lossyFixture is null)
        {
            Assert.Equal(Fixtures.HfTokens(), tokens);
        }
        else
        {
            // As the policy tests: the sparse fixture is right on its last GPU batch only (see PolicyTokenTests).
            var (firstRow, rows) = lossyFixture.StartsWith("sparse", StringComparison.Ordinal) ? (4, 4) : (0, 8);
            var (matching, compared) = LossyComparison.Agreement(lossyFixture, tokens, firstRow: firstRow, rows: rows);
            Assert.True(matching >= 0.9 * compared, $"{name}: {matching}/{compared} of FlexLLMGen's tokens");
        }

        Assert.NotEmpty(runs);
        foreach (var events in runs)
        {
            AssertLifetimes(events, name);
        }

        // The case exercises what it names.
        var all = runs.SelectMany(e => e).ToArray();
        var kinds = all.Where(e => e.Kind == BufferEventKind.Produced).Select(e => e.Buffer!.Value.Kind).ToHashSet();
        _output.WriteLine($"{name}: {all.Length} events over {runs.Count} block(s); kinds {string.Join(", ", kinds.Order())}");
        Assert.Superset(new HashSet<string> { "hidden-in", "hidden-out", "new-cache" }, kinds);
        Assert.Equal(policy.WGpuPercent < 100, kinds.Contains("weights"));
        Assert.Equal(policy.ActGpuPercent < 100, kinds.Contains("parked-hidden") && !all.Any(e => e.Kind == BufferEventKind.Moved));
        bool splitAttention = policy.CpuCacheCompute && policy.CacheGpuPercent is > 0 and < 100;
        var computeParts = all.Where(e => e.Kind == BufferEventKind.PartReleased && e.Part!.Value.Task.Kind == TaskKind.ComputeLayer)
            .GroupBy(e => (e.Run, e.Part!.Value.Task)).Select(g => g.Count());
        Assert.Equal(splitAttention, computeParts.Any(parts => parts == 2));
    }

    /// <summary>
    /// The lifetime rules, stated here independently of the store: the producer of each kind, and the consumer tasks whose
    /// parts must all have released a buffer before it goes (it goes within the release of the last of them).
    /// </summary>
    private static void AssertLifetimes(IReadOnlyList<BufferEvent> events, string what)
    {
        var released = new Dictionary<TaskPart, int>();
        var produced = new Dictionary<BufferId, int>();
        var ended = new Dictionary<BufferId, int>();
        for (int n = 0; n < events.Count; n++)
        {
            var e = events[n];
            switch (e.Kind)
            {
                case BufferEventKind.Produced:
                    Assert.True(produced.TryAdd(e.Buffer!.Value, n), $"{what}: {e.Buffer} produced twice");
                    Assert.True(ProducerOf(e.Buffer.Value.Kind) == e.Part!.Value.Task.Kind, $"{what}: {e.Buffer} produced by {e.Part}");
                    break;
                case BufferEventKind.PartReleased:
                    Assert.True(released.TryAdd(e.Part!.Value, n), $"{what}: {e.Part} released twice");
                    break;
                default:
                    Assert.True(produced.ContainsKey(e.Buffer!.Value), $"{what}: {e.Buffer} {e.Kind} before it was produced");
                    Assert.True(ended.TryAdd(e.Buffer.Value, n), $"{what}: {e.Buffer} released twice ({e.Kind})");
                    break;
            }
        }

        var atDispose = events.Where(e => e.Kind == BufferEventKind.FreedAtDispose).Select(e => e.Buffer.ToString()).ToArray();
        Assert.True(atDispose.Length == 0, $"{what}: left at the end of the block: {string.Join(", ", atDispose)}");
        Assert.True(produced.Count == ended.Count, $"{what}: never released: {string.Join(", ", produced.Keys.Except(ended.Keys))}");

        foreach (var (buffer, at) in ended)
        {
            var end = events[at];
            var consumers = ConsumersOf(buffer, released.Keys);
            var parts = released.Where(r => consumers.Contains(r.Key.Task)).OrderBy(r => r.Value).ToArray();
            Assert.True(parts.Length > 0, $"{what}: {buffer} has no consumer part");
            var (last, lastAt) = parts[^1];
            if (end.Kind == BufferEventKind.Freed)
            {
                // Freed within the release of its last consumer part: right after that part's release event, among the
                // buffers that release freed.
                Assert.True(end.Part == last, $"{what}: {buffer} freed by {end.Part}, its last consumer part is {last}");
                Assert.True(at > lastAt && events.Skip(lastAt + 1).Take(at - lastAt - 1).All(e => e.Kind == BufferEventKind.Freed),
                    $"{what}: {buffer} was not freed within the release of {last}");
            }
            else
            {
                // Handed over (activations on the GPU tier) by its last consumer part while it ran, before its release.
                Assert.True(end.Part == last && at < lastAt, $"{what}: {buffer} handed over by {end.Part}, its last consumer part is {last}");
                Assert.True(parts.Length == 1 || parts[^2].Value < at, $"{what}: {buffer} handed over before all other consumer parts released it");
            }
        }
    }

    private static TaskKind ProducerOf(string kind) => kind switch
    {
        "weights" => TaskKind.LoadWeight,
        "loaded-cache" => TaskKind.LoadCache,
        "hidden-in" => TaskKind.LoadHidden,
        "hidden-out" or "new-cache" => TaskKind.ComputeLayer,
        "parked-hidden" => TaskKind.StoreHidden,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown buffer kind"),
    };

    /// <summary>The consumer tasks of <paramref name="buffer"/> among those that ran (<paramref name="ran"/>).</summary>
    private static HashSet<BlockTask> ConsumersOf(BufferId buffer, IEnumerable<TaskPart> ran)
    {
        var (i, j) = (buffer.Token, buffer.Layer);
        var tasks = ran.Select(p => p.Task).ToHashSet();
        BlockTask At(TaskKind kind, int layer) => new(kind, i, layer, buffer.Batch!.Value);
        var consumers = buffer.Kind switch
        {
            "weights" => tasks.Where(t => t.Kind == TaskKind.ComputeLayer && t.Token == i && t.Layer == j),
            "loaded-cache" or "hidden-in" => [At(TaskKind.ComputeLayer, j)],
            "hidden-out" => [At(TaskKind.StoreHidden, j)],
            // New entries go to the cache, or, when nothing stores them (the last token), go with the compute that made them.
            "new-cache" => [tasks.Contains(At(TaskKind.StoreCache, j)) ? At(TaskKind.StoreCache, j) : At(TaskKind.ComputeLayer, j)],
            "parked-hidden" => [At(TaskKind.LoadHidden, j + 1)],
            _ => throw new ArgumentOutOfRangeException(nameof(buffer), buffer, "unknown buffer kind"),
        };
        return consumers.ToHashSet();
    }
}
