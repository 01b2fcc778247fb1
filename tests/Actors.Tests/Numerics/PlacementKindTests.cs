namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;

public sealed class RandomModelFixture : IDisposable
{
    public RandomModel Model { get; } = new(layers: 4);

    public void Dispose() => Model.Dispose();
}

/// <summary>A 4-layer random model under each placement kind, through the actor pipeline, against the reference generator.</summary>
public class PlacementKindTests : IClassFixture<RandomModelFixture>
{
    private readonly RandomModel _model;

    public PlacementKindTests(RandomModelFixture fixture) => _model = fixture.Model;

    private static Policy Policy(double[] percent, bool cpuCacheCompute = false, bool overlap = true, bool sep = true) =>
        Tensors.Policies.Policy.FromPercent(percent, gpuBatchSize: 4, numGpuBatches: 2) with
        {
            Overlap = overlap,
            SepLayer = sep,
            CpuCacheCompute = cpuCacheCompute,
        };

    public static TheoryData<string, double[], bool> Placements() => new()
    {
        { "all on GPU", [100, 0, 100, 0, 100, 0], false },
        { "weights on disk", [0, 0, 100, 0, 100, 0], false },
        { "weights split over three tiers", [30, 30, 100, 0, 100, 0], false },
        { "cache on disk", [100, 0, 0, 0, 100, 0], false },
        { "cache on disk, CPU attention", [100, 0, 0, 0, 100, 0], true },
        { "cache mixed over three tiers", [100, 0, 30, 30, 100, 0], false },
        { "cache mixed over three tiers, CPU attention", [100, 0, 30, 30, 100, 0], true },
        { "activations on CPU", [100, 0, 100, 0, 0, 100], false },
        { "activations on disk", [100, 0, 100, 0, 0, 0], false },
    };

    [Theory]
    [MemberData(nameof(Placements))]
    public async Task Each_placement_should_match_the_reference_generator(string what, double[] percent, bool cpuCacheCompute)
    {
        // 7 prompts in blocks of 8: the last GPU batch is padded; some prompts are left-padded.
        var (ids, mask) = _model.Prompts(7, 6);
        var (expected, gaps) = _model.ReferenceWithGaps(ids, mask, genLen: 5);
        Assert.True(expected.SelectMany(r => r).Distinct().Count() > 2, "the random model should not emit a constant");
        var offload = Fixtures.NewOffloadDir();
        try
        {
            foreach (var (overlap, sep) in new[] { (true, true), (false, false) })
            {
                var settings = new EngineSettings
                {
                    ModelPath = _model.Folder,
                    Model = _model.Config,
                    Policy = Policy(percent, cpuCacheCompute, overlap, sep),
                    OffloadDirectory = offload,
                };
                await using var flexgen = FlexGenSystem.Start(settings, "placement");
                var result = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(5) });
                RandomModel.AssertSameUpToNearTies(expected, gaps, result.OutputIds, $"{what} (overlap {overlap}, sep {sep})");
            }

            Assert.Empty(Directory.EnumerateFileSystemEntries(offload)); // every backend deleted its offload folder
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    [Fact]
    public async Task Stop_token_and_cut_gen_len_should_behave_as_flexgen()
    {
        var (ids, mask) = _model.Prompts(8, 6);
        var (full, fullGaps) = _model.ReferenceWithGaps(ids, mask, genLen: 6);
        long stop = full[0][2]; // a token row 0 emits at step 2
        var (stopped, stoppedGaps) = _model.ReferenceWithGaps(ids, mask, genLen: 6, stop: stop);
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = Policy([0, 50, 50, 50, 0, 100]), OffloadDirectory = offload };
            await using var flexgen = FlexGenSystem.Start(settings, "stop");
            var withStop = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(6) { StopTokenId = (int)stop } });
            var stoppedRows = withStop.OutputIds.Select(r => r.ToArray()).ToArray();
            RandomModel.AssertSameUpToNearTies(stopped, stoppedGaps, stoppedRows, "stop token");
            Assert.Contains(stoppedRows, row => row.Contains(stop));
            foreach (var row in stoppedRows)
            {
                int at = Array.IndexOf(row, stop);
                Assert.All(row.Skip(at < 0 ? row.Length : at + 1), id => Assert.Equal(_model.Config.PadTokenId, id)); // after the stop token: pads
            }

            var cut = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(6), CutGenLen = 3 });
            RandomModel.AssertSameUpToNearTies(full.Select(r => r.Take(3).ToArray()).ToArray(), fullGaps, cut.OutputIds.Select(r => r.Take(3).ToArray()).ToArray(), "cut_gen_len");
            Assert.All(cut.OutputIds, row => Assert.All(row.Skip(3), id => Assert.Equal(_model.Config.PadTokenId, id)));
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    [Fact]
    public async Task Block_should_stop_early_once_every_sequence_emitted_the_stop_token()
    {
        const int genLen = 8;
        var (allIds, allMask) = _model.Prompts(8, 6);
        var full = _model.Reference(allIds, allMask, genLen);
        long stop = full[0][1]; // a token row 0 emits at step 1
        // The prompts that emit it before the last two steps: all of them stop early (the block's padding copies the last).
        var rows = Enumerable.Range(0, 8).Where(r => Array.IndexOf(full[r], stop) is >= 0 and < genLen - 2).ToArray();
        var ids = rows.Select(r => allIds[r]).ToArray();
        var mask = rows.Select(r => allMask[r]).ToArray();
        var (expected, gaps) = _model.ReferenceWithGaps(ids, mask, genLen, stop);
        int stoppedAfter = expected.Max(row => Array.IndexOf(row, stop));
        Assert.InRange(stoppedAfter, 0, genLen - 3);

        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = Policy([0, 50, 50, 50, 0, 100]), OffloadDirectory = offload };
            await using var flexgen = FlexGenSystem.Start(settings, "early-stop");
            var withStop = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(genLen) { StopTokenId = (int)stop } });
            var without = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(genLen) });

            RandomModel.AssertSameUpToNearTies(expected, gaps, withStop.OutputIds, $"stop token {stop} (rows {string.Join(",", rows)})");
            var computed = withStop.Trace.Events.Where(e => e.Task.Kind == FlexGen.Actors.Schedule.TaskKind.ComputeLayer).Select(e => e.Task.Token).ToArray();
            var computedWithout = without.Trace.Events.Where(e => e.Task.Kind == FlexGen.Actors.Schedule.TaskKind.ComputeLayer).Select(e => e.Task.Token).ToArray();
            Assert.Equal(genLen - 1, computedWithout.Max());
            // Nothing of the tokens after the stop runs but what was already handed out when the last batch stopped:
            // at most the first GPU batch's next token (it waits on no other batch).
            Assert.True(computed.Max() <= stoppedAfter + 1, $"computes ran up to token {computed.Max()}, all rows stopped after {stoppedAfter}");
            Assert.True(computed.Length < computedWithout.Length);
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    [Fact]
    public async Task Sampling_with_a_seed_should_repeat_and_differ_from_greedy()
    {
        var (ids, mask) = _model.Prompts(8, 6);
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = _model.Folder, Model = _model.Config, Policy = Policy([100, 0, 100, 0, 100, 0]), OffloadDirectory = offload };
            await using var flexgen = FlexGenSystem.Start(settings, "sampling");
            GenerateRequest Sampled(ulong seed) => new()
            {
                PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(6) { Sampling = new FlexGen.Tensors.Layers.SamplingOptions(true, 1.5, seed) },
            };
            var a = await flexgen.GenerateAsync(Sampled(11));
            var b = await flexgen.GenerateAsync(Sampled(11));
            var greedy = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = ids.ToRows(), AttentionMask = mask.ToRows(), Generation = new(6) });
            Assert.Equal(a.OutputIds.SelectMany(r => r), b.OutputIds.SelectMany(r => r));
            Assert.NotEqual(greedy.OutputIds.SelectMany(r => r), a.OutputIds.SelectMany(r => r));
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }
}
