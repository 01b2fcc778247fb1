namespace FlexGen.Actors.Tests;

using FlexGen.Tensors.Models;
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
            : [task.Kind is TaskKind.LoadWeight or TaskKind.LoadCache ? PipelineActorKind.DiskIo : PipelineActorKind.Copy]);
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
}
