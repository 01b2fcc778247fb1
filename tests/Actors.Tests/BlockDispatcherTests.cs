namespace FlexGen.Actors.Tests;

using FlexGen.Tensors.Models;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

public class BlockDispatcherTests
{
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void Dropping_the_tokens_after_a_stop_should_finish_the_block_without_them(bool overlap, bool grouped)
    {
        const int stopAfter = 1, genLen = 5, batches = 2;
        var shape = new ScheduleShape(LayerKinds.BuildLayers(2, true), batches, genLen, genLen, overlap, grouped);
        var schedule = BlockSchedule.Create(shape);
        var dispatcher = new BlockDispatcher(schedule, task => task.Kind == TaskKind.ComputeLayer
            ? [PipelineActorKind.GpuCompute, PipelineActorKind.CpuCompute] // two parts, as with CPU attention
            : [task.Kind is TaskKind.LoadWeight or TaskKind.LoadCache ? PipelineActorKind.DiskIo : PipelineActorKind.Copy],
            PipelineSettings.Default.MaxInFlightPerTier);
        var trigger = new BlockTask(TaskKind.StoreHidden, stopAfter, shape.NumLayers - 1, batches - 1);
        var handedOut = new List<BlockTask>();
        int dropped = 0;
        while (!dispatcher.IsFinished)
        {
            var ready = dispatcher.TakeReady();
            Assert.NotEmpty(ready); // never stuck
            foreach (var (task, tier) in ready)
            {
                handedOut.Add(task);
                dispatcher.Complete(task, tier);
                if (task == trigger && dispatcher.IsDone(trigger))
                {
                    dropped = dispatcher.DropAfterToken(stopAfter);
                }
            }
        }

        Assert.True(dropped > 0);
        Assert.Equal(0, dispatcher.InFlight);
        // Every task up to the stop ran; of later tokens only what was handed out before the stop was known.
        Assert.All(schedule.Tasks.Where(t => t.Task.Token <= stopAfter), t => Assert.Contains(t.Task, handedOut));
        Assert.DoesNotContain(handedOut, t => t.Token > stopAfter + 1);
        Assert.True(handedOut.Distinct().Count() < schedule.Tasks.Count);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Cache_loads_should_run_as_many_steps_ahead_of_the_compute_as_the_shape_says(int prefetchSteps)
    {
        var shape = new ScheduleShape(LayerKinds.BuildLayers(3, true), 2, 3, 3, Overlap: true, PrefetchSteps: prefetchSteps);
        var schedule = BlockSchedule.Create(shape);
        int Step(BlockTask task) => schedule.StepOf(task.Token, task.Layer, task.Batch);

        // At each compute, the furthest cache load handed out says how many steps ahead the loads ran (only decode steps
        // load a cache: counted where the furthest load is past this compute).
        int furthestLoad = -1;
        var ahead = new List<int>();
        RunComputesInOrder(schedule, TaskKind.LoadCache, load => furthestLoad = Math.Max(furthestLoad, Step(load)), compute =>
        {
            if (furthestLoad > Step(compute)) ahead.Add(furthestLoad - Step(compute));
        });

        Assert.Equal(prefetchSteps, ahead.Max());
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    public void Weight_loads_should_run_as_many_layers_ahead_of_the_compute_as_the_shape_says(int lookahead, bool grouped)
    {
        const int genLen = 3;
        var shape = new ScheduleShape(LayerKinds.BuildLayers(3, true), 2, genLen, genLen, Overlap: true, grouped,
            WeightLookahead: lookahead);
        int Index(BlockTask task) => (task.Token * shape.NumLayers) + task.Layer;

        // When a layer's first compute comes up, the furthest weight load handed out says how far the loads ran ahead.
        int furthestLoad = -1;
        var ahead = new List<int>();
        RunComputesInOrder(BlockSchedule.Create(shape), TaskKind.LoadWeight, load => furthestLoad = Math.Max(furthestLoad, Index(load)), compute =>
        {
            if (compute.Batch == 0) ahead.Add(furthestLoad - Index(compute));
        });

        // The last layers have fewer left to load.
        Assert.Equal(genLen * shape.NumLayers, ahead.Count);
        Assert.All(ahead.SkipLast(lookahead), layers => Assert.Equal(lookahead, layers));
        Assert.Equal(Enumerable.Range(0, lookahead).Reverse(), ahead.TakeLast(lookahead));
    }

    [Fact]
    public void Default_settings_should_hand_the_compute_a_grouped_layers_other_batches_at_once()
    {
        // Grouped compute: part k = 0 computes the layer for all 4 GPU batches, parts 1-3 only follow it. With the default
        // in flight they reach the compute actor together, not two and then one after a round trip through the coordinator.
        const int batches = 4;
        var shape = new ScheduleShape(LayerKinds.BuildLayers(2, true), batches, 3, 3, Overlap: true, GroupedCompute: true);
        var groupedLayers = new List<int>();
        RunComputesInOrder(BlockSchedule.Create(shape), TaskKind.LoadWeight, _ => { }, _ => { },
            handedOut =>
            {
                var followers = handedOut.Where(p => p.Task.Kind == TaskKind.ComputeLayer && p.Task.Batch > 0).ToArray();
                if (followers.Length > 0)
                {
                    Assert.Equal(batches - 1, followers.Length);
                    Assert.Single(followers.Select(p => (p.Task.Token, p.Task.Layer)).Distinct());
                    groupedLayers.Add(followers[0].Task.Token * shape.NumLayers + followers[0].Task.Layer);
                }
            });

        Assert.Equal(Enumerable.Range(0, 3 * shape.NumLayers), groupedLayers);
    }

    /// <summary>
    /// Drives a dispatcher over <paramref name="schedule"/> with computes on one tier, <paramref name="loads"/> on the disk
    /// tier and everything else on the copy tier: every transfer finishes as soon as it is handed out (each load of that
    /// kind first seen by <paramref name="loaded"/>), the computes finish one at a time, in block order, each first seen
    /// by <paramref name="computing"/>; <paramref name="handedOut"/> sees each hand-out whole. Parts in flight per tier: the
    /// pipeline's default.
    /// </summary>
    private static void RunComputesInOrder(BlockSchedule schedule, TaskKind loads, Action<BlockTask> loaded, Action<BlockTask> computing,
        Action<IReadOnlyList<(BlockTask Task, PipelineActorKind Tier)>>? handedOut = null)
    {
        var dispatcher = new BlockDispatcher(schedule, task => [task.Kind == TaskKind.ComputeLayer ? PipelineActorKind.GpuCompute
            : task.Kind == loads ? PipelineActorKind.DiskIo : PipelineActorKind.Copy], PipelineSettings.Default.MaxInFlightPerTier);
        var computes = new Queue<(BlockTask Task, PipelineActorKind Tier)>();
        while (!dispatcher.IsFinished)
        {
            for (var ready = dispatcher.TakeReady(); ready.Count > 0; ready = dispatcher.TakeReady())
            {
                handedOut?.Invoke(ready);
                foreach (var (task, tier) in ready)
                {
                    if (task.Kind == TaskKind.ComputeLayer)
                    {
                        computes.Enqueue((task, tier));
                        continue;
                    }

                    if (task.Kind == loads) loaded(task);
                    dispatcher.Complete(task, tier);
                }
            }

            Assert.True(computes.Count > 0 || dispatcher.IsFinished, "stuck with nothing to run");
            if (computes.Count == 0) break;
            var compute = computes.Dequeue();
            computing(compute.Task);
            dispatcher.Complete(compute.Task, compute.Tier);
        }
    }
}
