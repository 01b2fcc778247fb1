namespace FlexGen.Actors.Tests;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Models;
using FlexGen.Actors.Schedule;

public class BlockScheduleTests
{
    private static string Abbrev(BlockTask t) => t.Kind switch
    {
        TaskKind.LoadWeight => "LW",
        TaskKind.LoadCache => "LC",
        TaskKind.LoadHidden => "LH",
        TaskKind.ComputeLayer => "C",
        TaskKind.StoreCache => "SC",
        TaskKind.StoreHidden => "SH",
        _ => "?",
    } + $"({t.Token},{t.Layer},{t.Batch})";

    private static string[] Order(int blocks, bool sep, int batches, int genLen, bool overlap, int? cut = null) =>
        BlockSchedule.Create(new ScheduleShape(LayerKinds.BuildLayers(blocks, sep), batches, genLen, cut ?? genLen, overlap))
            .Tasks.Select(t => Abbrev(t.Task)).ToArray();

    private static string[] Split(string s) => s.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void Overlap_multi_batch_should_follow_generation_loop_overlap_multi_batch()
    {
        // Derived by hand from FlexGen's loop: load_weight(i,j+1,k), load_cache(i,j,k+1), store_hidden(i,j,k-1),
        // load_hidden(i,j,k+1), compute_layer(i,j,k), store_cache(i,j,k-1), with its corner cases.
        var expected = Split(
            "LW(0,0,0) LH(0,0,0) " +
            "LW(0,1,0) LH(0,0,1) C(0,0,0) " +
            "SH(0,0,0) LH(0,1,0) C(0,0,1) " +
            "LW(0,2,0) SH(0,0,1) LH(0,1,1) C(0,1,0) " +
            "SH(0,1,0) LH(0,2,0) C(0,1,1) SC(0,1,0) " +
            "LW(1,0,0) SH(0,1,1) LH(0,2,1) C(0,2,0) SC(0,1,1) " +
            "SH(0,2,0) LH(1,0,0) C(0,2,1) " +
            "LW(1,1,0) SH(0,2,1) LH(1,0,1) C(1,0,0) " +
            "LC(1,1,0) SH(1,0,0) LH(1,1,0) C(1,0,1) " +
            "LW(1,2,0) LC(1,1,1) SH(1,0,1) LH(1,1,1) C(1,1,0) " +
            "SH(1,1,0) LH(1,2,0) C(1,1,1) " +
            "SH(1,1,1) LH(1,2,1) C(1,2,0) " +
            "SH(1,2,0) C(1,2,1) " +
            "SH(1,2,1)");
        Assert.Equal(expected, Order(blocks: 1, sep: false, batches: 2, genLen: 2, overlap: true));
    }

    [Fact]
    public void Overlap_single_batch_should_follow_generation_loop_overlap_single_batch()
    {
        var expected = Split(
            "LW(0,0,0) " +
            "LW(0,1,0) LH(0,0,0) C(0,0,0) SH(0,0,0) " +
            "LW(0,2,0) LH(0,1,0) C(0,1,0) SH(0,1,0) " +
            "LW(1,0,0) LH(0,2,0) C(0,2,0) SC(0,1,0) SH(0,2,0) " +
            "LW(1,1,0) LC(1,1,0) LH(1,0,0) C(1,0,0) SH(1,0,0) " +
            "LW(1,2,0) LH(1,1,0) C(1,1,0) SH(1,1,0) " +
            "LH(1,2,0) C(1,2,0) SH(1,2,0)");
        Assert.Equal(expected, Order(blocks: 1, sep: false, batches: 1, genLen: 2, overlap: true));
    }

    [Fact]
    public void Grouped_compute_should_follow_the_single_batch_loop_with_each_task_for_every_batch()
    {
        // generation_loop_overlap_single_batch's order, each task issued for k = 0 and 1 in turn; C(i,j,0) computes both.
        var expected = Split(
            "LW(0,0,0) " +
            "LW(0,1,0) LH(0,0,0) LH(0,0,1) C(0,0,0) C(0,0,1) SH(0,0,0) SH(0,0,1) " +
            "LW(0,2,0) LH(0,1,0) LH(0,1,1) C(0,1,0) C(0,1,1) SH(0,1,0) SH(0,1,1) " +
            "LW(1,0,0) LH(0,2,0) LH(0,2,1) C(0,2,0) C(0,2,1) SC(0,1,0) SC(0,1,1) SH(0,2,0) SH(0,2,1) " +
            "LW(1,1,0) LC(1,1,0) LC(1,1,1) LH(1,0,0) LH(1,0,1) C(1,0,0) C(1,0,1) SH(1,0,0) SH(1,0,1) " +
            "LW(1,2,0) LH(1,1,0) LH(1,1,1) C(1,1,0) C(1,1,1) SH(1,1,0) SH(1,1,1) " +
            "LH(1,2,0) LH(1,2,1) C(1,2,0) C(1,2,1) SH(1,2,0) SH(1,2,1)");
        var schedule = BlockSchedule.Create(new ScheduleShape(LayerKinds.BuildLayers(1, false), 2, 2, 2, Overlap: true, GroupedCompute: true));
        Assert.Equal(expected, schedule.Tasks.Select(t => Abbrev(t.Task)).ToArray());
        Assert.Equal((0, 2), schedule.BatchesComputedBy(new BlockTask(TaskKind.ComputeLayer, 1, 1, 0)));
        Assert.Equal((1, 0), schedule.BatchesComputedBy(new BlockTask(TaskKind.ComputeLayer, 1, 1, 1)));
        Assert.Contains(new BlockTask(TaskKind.LoadHidden, 1, 1, 1), schedule.DependenciesOf(new BlockTask(TaskKind.ComputeLayer, 1, 1, 0)));
    }

    [Fact]
    public void Normal_loop_should_load_compute_and_store_in_order()
    {
        var expected = Split(
            "LW(0,0,0) LH(0,0,0) C(0,0,0) SH(0,0,0) LH(0,0,1) C(0,0,1) SH(0,0,1) " +
            "LW(0,1,0) LH(0,1,0) C(0,1,0) SH(0,1,0) SC(0,1,0) LH(0,1,1) C(0,1,1) SH(0,1,1) SC(0,1,1) " +
            "LW(0,2,0) LH(0,2,0) C(0,2,0) SH(0,2,0) LH(0,2,1) C(0,2,1) SH(0,2,1) " +
            "LW(1,0,0) LH(1,0,0) C(1,0,0) SH(1,0,0) LH(1,0,1) C(1,0,1) SH(1,0,1) " +
            "LW(1,1,0) LC(1,1,0) LH(1,1,0) C(1,1,0) SH(1,1,0) LC(1,1,1) LH(1,1,1) C(1,1,1) SH(1,1,1) " +
            "LW(1,2,0) LH(1,2,0) C(1,2,0) SH(1,2,0) LH(1,2,1) C(1,2,1) SH(1,2,1)");
        Assert.Equal(expected, Order(blocks: 1, sep: false, batches: 2, genLen: 2, overlap: false));
    }

    [Fact]
    public void Cut_gen_len_should_run_fewer_tokens_but_keep_storing_the_cache()
    {
        var order = Order(blocks: 1, sep: false, batches: 1, genLen: 3, overlap: false, cut: 2);
        Assert.DoesNotContain(order, t => t.Contains("(2,"));
        Assert.Contains("SC(1,1,0)", order); // token 1 is not the last of gen_len 3: its cache is stored
    }

    [Fact]
    public void Sep_layer_should_split_each_block_into_attention_and_mlp()
    {
        var layers = LayerKinds.BuildLayers(2, sepLayer: true);
        Assert.Equal(
            new[] { LayerKind.InputEmbedding, LayerKind.Attention, LayerKind.Mlp, LayerKind.Attention, LayerKind.Mlp, LayerKind.OutputEmbedding },
            layers);
        Assert.Equal(1, LayerKinds.BlockIndexOf(layers, 3));
        Assert.Equal(1, LayerKinds.BlockIndexOf(layers, 4));

        var order = Order(blocks: 2, sep: true, batches: 1, genLen: 2, overlap: false);
        Assert.Contains("LC(1,1,0)", order);
        Assert.DoesNotContain("LC(1,2,0)", order); // the MLP layer has no cache
    }

    public static TheoryData<int, bool, int, int, bool, bool> Shapes()
    {
        var data = new TheoryData<int, bool, int, int, bool, bool>();
        foreach (int blocks in new[] { 1, 2, 3 })
        {
            foreach (bool sep in new[] { false, true })
            {
                foreach (int batches in new[] { 1, 2, 3 })
                {
                    foreach (int gen in new[] { 1, 2, 3 })
                    {
                        foreach (bool overlap in new[] { false, true })
                        {
                            data.Add(blocks, sep, batches, gen, overlap, false);
                            data.Add(blocks, sep, batches, gen, overlap, true);
                        }
                    }
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Every_schedule_should_compute_each_step_once_load_weights_once_per_token_and_depend_only_backwards(int blocks, bool sep, int batches, int gen, bool overlap, bool grouped)
    {
        var layers = LayerKinds.BuildLayers(blocks, sep);
        var schedule = BlockSchedule.Create(new ScheduleShape(layers, batches, gen, gen, overlap, grouped));
        var tasks = schedule.Tasks.Select(t => t.Task).ToArray();

        var computes = tasks.Where(t => t.Kind == TaskKind.ComputeLayer).ToArray();
        Assert.Equal(gen * layers.Count * batches, computes.Length);
        for (int n = 0; n < computes.Length; n++)
        {
            Assert.Equal(n, schedule.StepOf(computes[n].Token, computes[n].Layer, computes[n].Batch)); // i, j, k order
        }

        var weightLoads = tasks.Where(t => t.Kind == TaskKind.LoadWeight).ToArray();
        Assert.Equal(gen * layers.Count, weightLoads.Length);
        Assert.All(weightLoads, w => Assert.Equal(0, w.Batch));

        int cacheLayers = layers.Count(l => l.HasKvCache());
        Assert.Equal((gen - 1) * cacheLayers * batches, tasks.Count(t => t.Kind == TaskKind.LoadCache));
        Assert.Equal((gen - 1) * cacheLayers * batches, tasks.Count(t => t.Kind == TaskKind.StoreCache));
        Assert.Equal(gen * layers.Count * batches, tasks.Count(t => t.Kind == TaskKind.LoadHidden));
        Assert.Equal(gen * layers.Count * batches, tasks.Count(t => t.Kind == TaskKind.StoreHidden));

        foreach (var task in tasks)
        {
            int position = schedule.PositionOf(task);
            Assert.All(schedule.DependenciesOf(task), d => Assert.True(schedule.PositionOf(d) < position, $"{task} depends on later {d}"));
        }

        // Every compute's loads come before it and its stores after it, in block order too.
        foreach (var c in computes)
        {
            int at = schedule.PositionOf(c);
            Assert.True(schedule.PositionOf(new BlockTask(TaskKind.LoadWeight, c.Token, c.Layer, 0)) < at);
            Assert.True(schedule.PositionOf(new BlockTask(TaskKind.LoadHidden, c.Token, c.Layer, c.Batch)) < at);
            Assert.True(schedule.PositionOf(new BlockTask(TaskKind.StoreHidden, c.Token, c.Layer, c.Batch)) > at);
        }
    }

    [Fact]
    public void Invalid_shapes_should_be_rejected_naming_the_field()
    {
        var layers = LayerKinds.BuildLayers(1, false);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => BlockSchedule.Create(new ScheduleShape(layers, 0, 2, 2, true)));
        Assert.Equal("NumGpuBatches", e.ParamName);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => BlockSchedule.Create(new ScheduleShape(layers, 1, 2, 3, true)));
        Assert.Equal("ExecuteGenLen", e.ParamName);
        Assert.Throws<ArgumentException>(() => BlockSchedule.Create(new ScheduleShape(new[] { LayerKind.Mlp }, 1, 1, 1, true)));
    }
}
