namespace FlexGen.Actors.Schedule;

using FlexGen.Tensors.Models;
/// <summary>The shape of one generation run as far as the block order is concerned.</summary>
/// <param name="Layers">FlexGen's layer list (see <see cref="LayerKinds.BuildLayers"/>).</param>
/// <param name="NumGpuBatches">GPU batches per block (k runs over 0..NumGpuBatches-1).</param>
/// <param name="GenLen">Tokens to generate (FlexGen's task.gen_len; the last token stores no cache).</param>
/// <param name="ExecuteGenLen">Tokens actually run (cut_gen_len when given, else <see cref="GenLen"/>).</param>
/// <param name="Overlap">FlexGen's overlapped loops (true) or generation_loop_normal (false).</param>
/// <param name="GroupedCompute">The GPU batches of a layer compute together: ComputeLayer(i, j, 0) runs the layer for
/// every k at once (one matmul over all their rows; attention per GPU batch over its own cache), so each layer's loads
/// of every k come before its computes and its stores after them, as FlexGen's single-batch loop orders one batch's.</param>
/// <param name="FirstStage">The layers start the model (they embed the tokens); false for a later pipeline stage, whose
/// first layer's input comes from the stage before.</param>
/// <param name="LastStage">The layers end the model (they sample); false for an earlier pipeline stage, whose last
/// layer's output goes to the stage after.</param>
/// <param name="WeightLookahead">With overlap, how many layers ahead of the running compute the weights may load: 1 is
/// FlexGen's (the next layer's load runs while this one computes); the plan decides (<c>PlacementPlan.WeightLookahead</c>),
/// as it counts the buffers in flight. The block order is FlexGen's either way; only the dispatcher's gate moves.</param>
/// <param name="PrefetchSteps">With overlap, how many compute steps the loads and stores may run ahead of the compute (the
/// pipeline's <c>prefetch-steps</c>, 1 in FlexGen); the plan counts the buffers that keeps in flight
/// (<c>PlacementPlan.PrefetchSteps</c>), and the dispatcher gates by it.</param>
public sealed record ScheduleShape(IReadOnlyList<LayerKind> Layers, int NumGpuBatches, int GenLen, int ExecuteGenLen, bool Overlap,
    bool GroupedCompute = false, bool FirstStage = true, bool LastStage = true, int WeightLookahead = 1, int PrefetchSteps = 1)
{
    public int NumLayers => Layers.Count;

    /// <summary>The whole model in one schedule: the last layer's tokens feed the first layer of the next token here.</summary>
    public bool WholeModel => FirstStage && LastStage;

    public void Validate()
    {
        if (Layers.Count < 1 || FirstStage != (Layers[0] == LayerKind.InputEmbedding) || LastStage != (Layers[^1] == LayerKind.OutputEmbedding)
            || Layers.Skip(1).Contains(LayerKind.InputEmbedding) || Layers.SkipLast(1).Contains(LayerKind.OutputEmbedding))
        {
            throw new ArgumentException(
                "Layers must start with InputEmbedding exactly when they are the first stage and end with OutputEmbedding exactly when they are the last",
                nameof(Layers));
        }

        if (NumGpuBatches < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(NumGpuBatches), NumGpuBatches, "must be >= 1");
        }

        if (WeightLookahead < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(WeightLookahead), WeightLookahead, "must be >= 1");
        }

        if (PrefetchSteps < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(PrefetchSteps), PrefetchSteps, "must be >= 1");
        }

        if (GenLen < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(GenLen), GenLen, "must be >= 1");
        }

        if (ExecuteGenLen < 1 || ExecuteGenLen > GenLen)
        {
            throw new ArgumentOutOfRangeException(nameof(ExecuteGenLen), ExecuteGenLen, $"must be in [1, GenLen={GenLen}]");
        }
    }
}

/// <summary>
/// FlexGen's block (zig-zag) schedule as a flat task list: exactly the load_weight / load_cache /
/// load_hidden / compute_layer / store_cache / store_hidden calls that do work, in the order
/// generation_loop_normal (overlap off), generation_loop_overlap_single_batch (overlap on, one GPU
/// batch) or generation_loop_overlap_multi_batch (overlap on, several) make them. FlexGen's corner
/// cases are applied as it applies them: indices wrap across batch, layer and token boundaries;
/// calls that fall outside the run, loads of the prefill cache, cache stores of the last token, cache
/// traffic of layers without attention and weight loads for k &gt; 0 (weights are loaded once per
/// layer and token, shared by all GPU batches) do nothing and are left out. With <see cref="ScheduleShape.GroupedCompute"/>
/// each of those loops runs each task of a layer for every k in turn (loads, then computes, then stores).
/// </summary>
public sealed class BlockSchedule
{
    private readonly List<ScheduledTask> _tasks = new();
    private readonly Dictionary<BlockTask, int> _position = new();

    private BlockSchedule(ScheduleShape shape)
    {
        shape.Validate();
        Shape = shape;
    }

    public ScheduleShape Shape { get; }

    /// <summary>All tasks in block order.</summary>
    public IReadOnlyList<ScheduledTask> Tasks => _tasks;

    /// <summary>Number of compute steps (i, j, k) in the run.</summary>
    public int StepCount => Shape.ExecuteGenLen * Shape.NumLayers * Shape.NumGpuBatches;

    public static BlockSchedule Create(ScheduleShape shape)
    {
        var schedule = new BlockSchedule(shape);
        if (shape.GroupedCompute)
        {
            schedule.BuildGrouped();
        }
        else if (!shape.Overlap)
        {
            schedule.BuildNormal();
        }
        else if (shape.NumGpuBatches == 1)
        {
            schedule.BuildOverlapSingleBatch();
        }
        else
        {
            schedule.BuildOverlapMultiBatch();
        }

        return schedule;
    }

    /// <summary>True when the schedule contains <paramref name="task"/>.</summary>
    public bool Contains(BlockTask task) => _position.ContainsKey(task);

    /// <summary>Index of <paramref name="task"/> in block order, or -1.</summary>
    public int PositionOf(BlockTask task) => _position.TryGetValue(task, out int p) ? p : -1;

    /// <summary>The step index of compute (i, j, k).</summary>
    public int StepOf(int i, int j, int k) => ((i * Shape.NumLayers) + j) * Shape.NumGpuBatches + k;

    /// <summary>
    /// The GPU batches whose layer math the part of ComputeLayer(i, j, k) runs: batch k alone, or with grouped compute
    /// every batch of the layer at k = 0 and none at k &gt; 0 (their results were made by the k = 0 part).
    /// </summary>
    public (int First, int Count) BatchesComputedBy(BlockTask compute) =>
        !Shape.GroupedCompute ? (compute.Batch, 1) : compute.Batch == 0 ? (0, Shape.NumGpuBatches) : (compute.Batch, 0);

    /// <summary>
    /// The tasks whose data <paramref name="task"/> consumes or whose buffer it overwrites, as far as they are
    /// in the schedule. All of them come earlier in block order, so a pipeline that starts each tier's tasks
    /// in block order once their dependencies completed cannot deadlock.
    /// <list type="bullet">
    /// <item>ComputeLayer(i, j, k): LoadWeight(i, j), LoadCache(i, j, k), LoadHidden(i, j, k). Grouped: at k = 0 the
    /// loads of every k of the layer; at k &gt; 0 ComputeLayer(i, j, 0), which made batch k's results.</item>
    /// <item>LoadHidden(i, j, k): ComputeLayer and StoreHidden of (i, j-1, k); for j = 0 and i &gt; 0 the token
    /// written by StoreHidden(i-1, last layer, k).</item>
    /// <item>StoreHidden / StoreCache (i, j, k): ComputeLayer(i, j, k).</item>
    /// <item>LoadCache(i, j, k): StoreCache(i-1, j, k).</item>
    /// <item>LoadWeight: none (weight homes are read-only).</item>
    /// </list>
    /// In a pipeline stage (not <see cref="ScheduleShape.WholeModel"/>) LoadHidden(i, 0, k) depends instead on
    /// <see cref="StageInput"/>(i, k), the hidden state (or, on the first stage, the tokens) another stage sends; the
    /// first stage's prompt (i = 0) needs none.
    /// </summary>
    public IEnumerable<BlockTask> DependenciesOf(BlockTask task)
    {
        if (task is { Kind: TaskKind.LoadHidden, Layer: 0 } && !Shape.WholeModel)
        {
            return Shape.FirstStage && task.Token == 0 ? [] : [StageInput(task.Token, task.Batch)];
        }

        var (kind, i, j, k) = (task.Kind, task.Token, task.Layer, task.Batch);
        var candidates = kind switch
        {
            TaskKind.ComputeLayer when Shape.GroupedCompute && k > 0 => new[] { new BlockTask(TaskKind.ComputeLayer, i, j, 0) },
            TaskKind.ComputeLayer when Shape.GroupedCompute => Enumerable.Range(0, Shape.NumGpuBatches)
                .SelectMany(b => new[] { new BlockTask(TaskKind.LoadCache, i, j, b), new BlockTask(TaskKind.LoadHidden, i, j, b) })
                .Prepend(new BlockTask(TaskKind.LoadWeight, i, j, 0)).ToArray(),
            TaskKind.ComputeLayer => new[]
            {
                new BlockTask(TaskKind.LoadWeight, i, j, 0),
                new BlockTask(TaskKind.LoadCache, i, j, k),
                new BlockTask(TaskKind.LoadHidden, i, j, k),
            },
            TaskKind.LoadHidden when j > 0 => new[]
            {
                new BlockTask(TaskKind.ComputeLayer, i, j - 1, k),
                new BlockTask(TaskKind.StoreHidden, i, j - 1, k),
            },
            TaskKind.LoadHidden when i > 0 => new[] { new BlockTask(TaskKind.StoreHidden, i - 1, Shape.NumLayers - 1, k) },
            TaskKind.StoreHidden or TaskKind.StoreCache => new[] { new BlockTask(TaskKind.ComputeLayer, i, j, k) },
            TaskKind.LoadCache => new[] { new BlockTask(TaskKind.StoreCache, i - 1, j, k) },
            _ => Array.Empty<BlockTask>(),
        };
        return candidates.Where(Contains);
    }

    /// <summary>
    /// The input of token i, GPU batch k at this stage's first layer when another stage provides it: that stage's last
    /// StoreHidden, seen from here at layer -1 (never a task of this schedule; <see cref="BlockDispatcher.Arrived"/>
    /// records it).
    /// </summary>
    public static BlockTask StageInput(int i, int k) => new(TaskKind.StoreHidden, i, -1, k);

    /// <summary>True when <paramref name="dependency"/> is an input from another stage (<see cref="StageInput"/>).</summary>
    public static bool IsStageInput(BlockTask dependency) => dependency is { Kind: TaskKind.StoreHidden, Layer: -1 };

    private void BuildNormal()
    {
        int layers = Shape.NumLayers, batches = Shape.NumGpuBatches;
        for (int i = 0; i < Shape.ExecuteGenLen; i++)
        {
            for (int j = 0; j < layers; j++)
            {
                int firstStep = StepOf(i, j, 0);
                for (int k = 0; k < batches; k++)
                {
                    LoadWeight(i, j, k, firstStep);
                }

                for (int k = 0; k < batches; k++)
                {
                    int step = StepOf(i, j, k);
                    LoadCache(i, j, k, step);
                    LoadHidden(i, j, k, step);
                    Compute(i, j, k, step);
                    StoreHidden(i, j, k, step);
                    StoreCache(i, j, k, step);
                }
            }
        }
    }

    private void BuildOverlapSingleBatch()
    {
        LoadWeight(0, 0, 0, -1);
        for (int i = 0; i < Shape.ExecuteGenLen; i++)
        {
            for (int j = 0; j < Shape.NumLayers; j++)
            {
                int step = StepOf(i, j, 0);
                LoadWeight(i, j + 1, 0, step);
                LoadCache(i, j + 1, 0, step);
                LoadHidden(i, j, 0, step);
                Compute(i, j, 0, step);
                StoreCache(i, j - 1, 0, step);
                StoreHidden(i, j, 0, step);
            }
        }
    }

    private void BuildOverlapMultiBatch()
    {
        for (int k = 0; k < Shape.NumGpuBatches; k++)
        {
            LoadWeight(0, 0, k, -1);
        }

        LoadHidden(0, 0, 0, -1);
        for (int i = 0; i < Shape.ExecuteGenLen; i++)
        {
            for (int j = 0; j < Shape.NumLayers; j++)
            {
                for (int k = 0; k < Shape.NumGpuBatches; k++)
                {
                    int step = StepOf(i, j, k);
                    LoadWeight(i, j + 1, k, step);
                    LoadCache(i, j, k + 1, step);
                    StoreHidden(i, j, k - 1, step);
                    LoadHidden(i, j, k + 1, step);
                    Compute(i, j, k, step);
                    StoreCache(i, j, k - 1, step);
                }
            }
        }

        StoreHidden(Shape.ExecuteGenLen - 1, Shape.NumLayers - 1, Shape.NumGpuBatches - 1, StepCount);
    }

    /// <summary>
    /// Grouped compute: FlexGen's single-batch loops (overlap on: the next layer's weights and cache load and the previous
    /// layer's cache stores while a layer computes; off: load, compute, store), each task issued for every k in turn.
    /// Every task of layer (i, j) belongs to its first step, so with overlap the next layer's loads wait only for the
    /// previous layer's computes.
    /// </summary>
    private void BuildGrouped()
    {
        int batches = Shape.NumGpuBatches;
        void ForEachBatch(Action<int> issue)
        {
            for (int k = 0; k < batches; k++)
            {
                issue(k);
            }
        }

        if (Shape.Overlap)
        {
            LoadWeight(0, 0, 0, -1);
        }

        for (int i = 0; i < Shape.ExecuteGenLen; i++)
        {
            for (int j = 0; j < Shape.NumLayers; j++)
            {
                int step = StepOf(i, j, 0);
                if (Shape.Overlap)
                {
                    LoadWeight(i, j + 1, 0, step);
                    ForEachBatch(k => LoadCache(i, j + 1, k, step));
                    ForEachBatch(k => LoadHidden(i, j, k, step));
                    ForEachBatch(k => Compute(i, j, k, step));
                    ForEachBatch(k => StoreCache(i, j - 1, k, step));
                    ForEachBatch(k => StoreHidden(i, j, k, step));
                }
                else
                {
                    LoadWeight(i, j, 0, step);
                    ForEachBatch(k => LoadCache(i, j, k, step));
                    ForEachBatch(k => LoadHidden(i, j, k, step));
                    ForEachBatch(k => Compute(i, j, k, step));
                    ForEachBatch(k => StoreHidden(i, j, k, step));
                    ForEachBatch(k => StoreCache(i, j, k, step));
                }
            }
        }
    }

    private void Add(TaskKind kind, int i, int j, int k, int step)
    {
        var task = new BlockTask(kind, i, j, k);
        if (!_position.TryAdd(task, _tasks.Count))
        {
            throw new InvalidOperationException($"block schedule would issue {task} twice");
        }

        _tasks.Add(new ScheduledTask(task, step));
    }

    // FlexGen's load_weight: j wraps to the next token; only k == 0 loads.
    private void LoadWeight(int i, int j, int k, int step)
    {
        if (WrapForward(ref i, ref j, ref k) && k == 0)
        {
            Add(TaskKind.LoadWeight, i, j, 0, step);
        }
    }

    // FlexGen's load_cache: nothing at prefill (checked before wrapping, as FlexGen does), k and j wrap.
    private void LoadCache(int i, int j, int k, int step)
    {
        if (i > 0 && WrapForward(ref i, ref j, ref k) && Shape.Layers[j].HasKvCache())
        {
            Add(TaskKind.LoadCache, i, j, k, step);
        }
    }

    // FlexGen's store_cache: k and j wrap backwards; the last token (of gen_len) stores nothing.
    private void StoreCache(int i, int j, int k, int step)
    {
        if (WrapBackward(ref i, ref j, ref k) && i != Shape.GenLen - 1 && Shape.Layers[j].HasKvCache())
        {
            Add(TaskKind.StoreCache, i, j, k, step);
        }
    }

    // FlexGen's load_hidden: k and j wrap forwards.
    private void LoadHidden(int i, int j, int k, int step)
    {
        if (WrapForward(ref i, ref j, ref k))
        {
            Add(TaskKind.LoadHidden, i, j, k, step);
        }
    }

    // FlexGen's store_hidden: k and j wrap backwards.
    private void StoreHidden(int i, int j, int k, int step)
    {
        if (WrapBackward(ref i, ref j, ref k))
        {
            Add(TaskKind.StoreHidden, i, j, k, step);
        }
    }

    /// <summary>
    /// FlexGen's forward index wrap: k past the last GPU batch moves to the next layer, j past the last layer to the
    /// next token. False when that lands after the last token run.
    /// </summary>
    private bool WrapForward(ref int i, ref int j, ref int k)
    {
        if (k == Shape.NumGpuBatches)
        {
            k = 0;
            j++;
        }

        if (j == Shape.NumLayers)
        {
            j = 0;
            i++;
        }

        return i < Shape.ExecuteGenLen;
    }

    /// <summary>FlexGen's backward index wrap (k = -1: last batch of the previous layer, and so on). False before token 0.</summary>
    private bool WrapBackward(ref int i, ref int j, ref int k)
    {
        if (k == -1)
        {
            k = Shape.NumGpuBatches - 1;
            j--;
        }

        if (j == -1)
        {
            j = Shape.NumLayers - 1;
            i--;
        }

        return i >= 0;
    }

    private void Compute(int i, int j, int k, int step) => Add(TaskKind.ComputeLayer, i, j, k, step);
}
