namespace FlexGen.Actors.Tests;

using System.Text.Json;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;

public class TracingTests
{
    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);

    private static ExecutionTrace Sample() => new(
    [
        new TraceEvent(PipelineActorKind.DiskIo, new BlockTask(TaskKind.LoadWeight, 0, 0, 0), Ms(0), Ms(10), 4096),
        new TraceEvent(PipelineActorKind.GpuCompute, new BlockTask(TaskKind.ComputeLayer, 0, 0, 0), Ms(10), Ms(30), 100),
        new TraceEvent(PipelineActorKind.DiskIo, new BlockTask(TaskKind.LoadWeight, 0, 1, 0), Ms(12), Ms(22), 4096),
        new TraceEvent(PipelineActorKind.Copy, new BlockTask(TaskKind.StoreHidden, 0, 0, 0), Ms(30), Ms(31), 64),
        new TraceEvent(PipelineActorKind.GpuCompute, new BlockTask(TaskKind.ComputeLayer, 0, 1, 0), Ms(31), Ms(51), 100),
    ]);

    [Fact]
    public void Summary_should_report_busy_time_overlap_gaps_and_efficiency()
    {
        var summary = Sample().Summarize();
        Assert.Equal(Ms(51), summary.Wall);
        var gpu = summary.Of(PipelineActorKind.GpuCompute)!;
        Assert.Equal(Ms(40), gpu.Busy);
        Assert.Equal(1, gpu.IdleGaps);
        Assert.Equal(Ms(1), gpu.LongestGap);
        Assert.Equal(Ms(11), gpu.Idle);
        var disk = summary.Of(PipelineActorKind.DiskIo)!;
        Assert.Equal(Ms(20), disk.Busy);
        Assert.Equal(8192, disk.Bytes);
        Assert.Equal(Ms(2), disk.LongestGap);
        // I/O [0,10] [12,22] [30,31] vs compute [10,30] [31,51]: overlap [12,22] = 10 ms.
        Assert.Equal(Ms(10), summary.IoComputeOverlap);
        Assert.Equal(51.0 / 40.0, summary.ScheduleEfficiency, 6);
        Assert.Equal(PipelineActorKind.GpuCompute, summary.Busiest.Tier);
        Assert.Contains("schedule efficiency 1.275", summary.ToString());
    }

    [Fact]
    public void A_phase_should_hold_the_events_of_its_tokens_only()
    {
        var sample = Sample();
        var trace = new ExecutionTrace([
            .. sample.Events,
            new TraceEvent(PipelineActorKind.DiskIo, new BlockTask(TaskKind.LoadWeight, 1, 0, 0), Ms(40), Ms(60), 4096),
            new TraceEvent(PipelineActorKind.GpuCompute, new BlockTask(TaskKind.ComputeLayer, 2, 0, 0), Ms(60), Ms(70), 100),
        ]);

        var prefill = trace.OfPhase(prefill: true);
        var decode = trace.OfPhase(prefill: false);

        Assert.Equal(sample.Events.ToArray(), prefill.Events.ToArray());
        Assert.Equal([1, 2], decode.Events.Select(e => e.Task.Token));
        // The disk's decode load overlaps the prefill's last compute: each phase counts its own tasks' time.
        Assert.Equal(Ms(20), decode.Summarize().Of(PipelineActorKind.DiskIo)!.Busy);
        Assert.Equal(Ms(20), prefill.Summarize().Of(PipelineActorKind.DiskIo)!.Busy);
    }

    [Fact]
    public void Summed_summaries_should_add_walls_and_tier_times_and_take_the_efficiency_of_the_sums()
    {
        var one = Sample().Summarize();
        var diskOnly = new ExecutionTrace([new TraceEvent(PipelineActorKind.DiskIo, new BlockTask(TaskKind.LoadWeight, 0, 0, 0), Ms(0), Ms(49), 4096)]).Summarize();

        var sum = TraceSummary.Sum([one, diskOnly]);

        Assert.Equal(Ms(100), sum.Wall);
        Assert.Equal(Ms(40), sum.Of(PipelineActorKind.GpuCompute)!.Busy);
        var disk = sum.Of(PipelineActorKind.DiskIo)!;
        Assert.Equal(Ms(69), disk.Busy);
        Assert.Equal(3, disk.Tasks);
        Assert.Equal(3 * 4096, disk.Bytes);
        Assert.Equal(Ms(2), disk.LongestGap);
        Assert.Equal(Ms(10), sum.IoComputeOverlap);
        // The busiest tier of the sums (disk, 69 ms), not of either part.
        Assert.Equal(100.0 / 69.0, sum.ScheduleEfficiency, 6);
    }

    [Fact]
    public void Chrome_trace_should_be_trace_event_json_with_one_complete_event_per_task_part()
    {
        using var stream = new MemoryStream();
        Sample().WriteChromeJson(stream);
        using var doc = JsonDocument.Parse(stream.ToArray());
        var events = doc.RootElement.GetProperty("traceEvents").EnumerateArray().ToArray();
        var complete = events.Where(e => e.GetProperty("ph").GetString() == "X").ToArray();
        Assert.Equal(5, complete.Length);
        var first = complete[0];
        Assert.Equal(0.0, first.GetProperty("ts").GetDouble());
        Assert.Equal(10000.0, first.GetProperty("dur").GetDouble());
        Assert.Equal("LoadWeight", first.GetProperty("args").GetProperty("kind").GetString());
        Assert.Equal(4096, first.GetProperty("args").GetProperty("bytes").GetInt64());
        Assert.Equal("disk-io", first.GetProperty("args").GetProperty("actor").GetString());
        var threadNames = events.Where(e => e.GetProperty("name").GetString() == "thread_name")
            .Select(e => e.GetProperty("args").GetProperty("name").GetString()).ToArray();
        Assert.Equal(new[] { "gpu-compute", "cpu-compute", "copy", "disk-io" }, threadNames);
    }

    [Fact]
    public void Empty_trace_should_summarize_to_zero()
    {
        var summary = ExecutionTrace.Empty.Summarize();
        Assert.Equal(TimeSpan.Zero, summary.Wall);
        Assert.Empty(summary.Tiers);
    }
}

public class HoconTests
{
    [Fact]
    public void Embedded_hocon_should_define_a_pinned_dispatcher_per_tier_actor_and_the_pipeline_defaults()
    {
        var config = FlexGen.Actors.Hosting.FlexGenHocon.Config;
        foreach (var tier in Enum.GetValues<PipelineActorKind>())
        {
            Assert.Equal("PinnedDispatcher", config.GetString(FlexGen.Actors.Hosting.FlexGenHocon.DispatcherOf(tier) + ".type"));
        }

        Assert.Equal(new FlexGen.Actors.Actors.PipelineSettings(8, 1), FlexGen.Actors.Actors.PipelineSettings.FromConfig(config));
    }

    [Fact]
    public void Coordinator_props_should_use_the_coordinators_own_pinned_dispatcher()
    {
        var config = FlexGen.Actors.Hosting.FlexGenHocon.Config;
        Assert.Equal("PinnedDispatcher", config.GetString(FlexGen.Actors.Hosting.FlexGenHocon.CoordinatorDispatcher + ".type"));
        var policy = FlexGen.Actors.Tests.Support.TestPolicies.Offloaded(1, overlap: true, sep: false, cpuCacheCompute: false);
        Assert.Equal(FlexGen.Actors.Hosting.FlexGenHocon.CoordinatorDispatcher,
            FlexGen.Actors.Actors.GenerationCoordinator.Props(policy, _ => throw new InvalidOperationException("not built")).Dispatcher);
    }
}
