namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Tiers;

/// <summary>
/// Every buffer between the tasks of one block, by kind. Each kind is declared once here with its producer and its
/// consumers; a buffer is freed exactly once, by this store, within the <see cref="Release"/> of its last consumer part
/// (after that part's stream finished, so no kernel or copy still reads it), or handed over by that part into a buffer
/// of another kind (<see cref="BufferSlots{TKey,TValue}.Take"/>). What is still held when the run is disposed
/// (cancellation, failure, a block that stopped early) is freed then.
/// <list type="table">
/// <listheader><term>kind (key)</term><description>producer → consumers</description></listheader>
/// <item><term>weights (i, j)</term><description>LoadWeight → every part of ComputeLayer(i, j, k), every k.</description></item>
/// <item><term>loaded-cache (i, j, k)</term><description>LoadCache → every part of ComputeLayer(i, j, k).</description></item>
/// <item><term>hidden-in (i, j, k)</term><description>LoadHidden → every part of ComputeLayer(i, j, k).</description></item>
/// <item><term>hidden-out (i, j, k)</term><description>ComputeLayer (all its parts write their rows) → StoreHidden(i, j, k).</description></item>
/// <item><term>new-cache (i, j, k)</term><description>ComputeLayer → StoreCache(i, j, k); when nothing stores them (the
/// last token), the compute's own parts: dropped after them, as FlexGen pops them.</description></item>
/// <item><term>parked-hidden (i, j, k)</term><description>StoreHidden (at the activation home) → LoadHidden(i, j + 1, k).</description></item>
/// </list>
/// </summary>
internal sealed class BlockBuffers : IDisposable
{
    private readonly RunId _run;
    private readonly BlockPlan _plan;
    private readonly IBufferObserver? _observer;
    private readonly Dictionary<BlockTask, List<HeldBuffer>> _byConsumer = new();
    private readonly List<Func<IReadOnlyList<HeldBuffer>>> _removeAll = new();
    private bool _disposed;

    public BlockBuffers(RunId run, BlockPlan plan, IBufferObserver? observer)
    {
        _run = run;
        _plan = plan;
        _observer = observer;
        var schedule = plan.Schedule;
        int batches = schedule.Shape.NumGpuBatches;
        Weights = Declare<LayerKey, LoadedWeights>(new("weights", TaskKind.LoadWeight,
            key => Enumerable.Range(0, batches).Select(k => new BlockTask(TaskKind.ComputeLayer, key.Token, key.Layer, k))));
        LoadedCache = Declare<BatchKey, LoadedCache>(new("loaded-cache", TaskKind.LoadCache, key => [key.Task(TaskKind.ComputeLayer)]));
        HiddenIn = Declare<BatchKey, DeviceTensor>(new("hidden-in", TaskKind.LoadHidden, key => [key.Task(TaskKind.ComputeLayer)]));
        HiddenOut = Declare<BatchKey, DeviceTensor>(new("hidden-out", TaskKind.ComputeLayer, key => [key.Task(TaskKind.StoreHidden)]));
        NewCache = Declare<BatchKey, CacheEntries>(new("new-cache", TaskKind.ComputeLayer, key =>
            [schedule.Contains(key.Task(TaskKind.StoreCache)) ? key.Task(TaskKind.StoreCache) : key.Task(TaskKind.ComputeLayer)]));
        ParkedHidden = Declare<BatchKey, TieredTensor>(new("parked-hidden", TaskKind.StoreHidden,
            key => [new BlockTask(TaskKind.LoadHidden, key.Token, key.Layer + 1, key.Batch)]));
    }

    /// <summary>Weights of layer j loaded for token i (GPU-homed weights are read in place and not here).</summary>
    public BufferSlots<LayerKey, LoadedWeights> Weights { get; }

    /// <summary>Cache segments of (j, k) loaded for the compute of token i.</summary>
    public BufferSlots<BatchKey, LoadedCache> LoadedCache { get; }

    /// <summary>The compute's input on the GPU tier: (b, s) token ids at j = 0, else (b, s, h) hidden states.</summary>
    public BufferSlots<BatchKey, DeviceTensor> HiddenIn { get; }

    /// <summary>The compute's output on the GPU tier: (b, s, h) hidden states, (b, 1) token ids after the last layer.</summary>
    public BufferSlots<BatchKey, DeviceTensor> HiddenOut { get; }

    public BufferSlots<BatchKey, CacheEntries> NewCache { get; }

    /// <summary>A layer's output at the activation home, between its store-hidden and the next layer's load-hidden.</summary>
    public BufferSlots<BatchKey, TieredTensor> ParkedHidden { get; }

    /// <summary>Guards all bookkeeping of the store and its slots.</summary>
    internal object Gate { get; } = new();

    /// <summary>
    /// <paramref name="part"/> has finished (its stream is synchronised): frees each buffer it was the last consumer of.
    /// </summary>
    public void Release(TaskPart part)
    {
        var freed = new List<HeldBuffer>();
        lock (Gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Emit(BufferEventKind.PartReleased, null, part);
            if (_byConsumer.TryGetValue(part.Task, out var waiting))
            {
                foreach (var held in waiting.ToArray())
                {
                    if (held.Pending.Remove(part) && held.Pending.Count == 0)
                    {
                        End(held);
                        Emit(BufferEventKind.Freed, held.Id, part);
                        freed.Add(held);
                    }
                }
            }
        }

        TierTensors.DisposeAll(freed.Select(h => h.Value));
    }

    /// <summary>Frees every buffer still held (cancellation, failure, a block stopped early); nothing is held after a full block.</summary>
    public void Dispose()
    {
        var left = new List<HeldBuffer>();
        lock (Gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var removeAll in _removeAll)
            {
                left.AddRange(removeAll());
            }

            _byConsumer.Clear();
            foreach (var held in left)
            {
                Emit(BufferEventKind.FreedAtDispose, held.Id, null);
            }
        }

        TierTensors.DisposeAll(left.Select(h => h.Value));
    }

    /// <summary>Starts holding a new buffer (under <see cref="Gate"/>); disposes <paramref name="value"/> when it cannot.</summary>
    internal HeldBuffer Hold(BufferId id, TaskKind producerKind, IEnumerable<BlockTask> consumers, IDisposable value, TaskPart producer, Action forget)
    {
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (producer.Task.Kind != producerKind)
            {
                throw new InvalidOperationException($"{id} is made by {producerKind}, not by {producer}");
            }

            var tasks = consumers.Where(_plan.Schedule.Contains).ToArray();
            var pending = tasks.SelectMany(t => _plan.Route(t).Select(actor => new TaskPart(t, actor))).ToHashSet();
            if (pending.Count == 0)
            {
                throw new InvalidOperationException($"{id} made by {producer} has no consumer in the schedule");
            }

            var held = new HeldBuffer(id, value, tasks, pending, forget);
            foreach (var task in tasks)
            {
                if (!_byConsumer.TryGetValue(task, out var list))
                {
                    _byConsumer[task] = list = new List<HeldBuffer>();
                }

                list.Add(held);
            }

            Emit(BufferEventKind.Produced, id, producer);
            return held;
        }
        catch
        {
            value.Dispose();
            throw;
        }
    }

    /// <summary>Hands <paramref name="held"/> over to <paramref name="taker"/>, its last pending consumer part (under <see cref="Gate"/>).</summary>
    internal void Move(HeldBuffer held, TaskPart taker)
    {
        if (held.Pending.Count != 1 || !held.Pending.Contains(taker))
        {
            throw new InvalidOperationException($"{held.Id} can be handed over only by its last consumer part, not by {taker} (waiting for {string.Join(", ", held.Pending)})");
        }

        End(held);
        Emit(BufferEventKind.Moved, held.Id, taker);
    }

    private BufferSlots<TKey, TValue> Declare<TKey, TValue>(BufferKind<TKey> kind)
        where TKey : struct, IBufferKey
        where TValue : class, IDisposable
    {
        var slots = new BufferSlots<TKey, TValue>(this, kind);
        _removeAll.Add(slots.RemoveAll);
        return slots;
    }

    private void End(HeldBuffer held)
    {
        held.Forget();
        foreach (var task in held.ConsumerTasks)
        {
            var list = _byConsumer[task];
            list.Remove(held);
            if (list.Count == 0)
            {
                _byConsumer.Remove(task);
            }
        }
    }

    private void Emit(BufferEventKind kind, BufferId? buffer, TaskPart? part) => _observer?.OnEvent(new BufferEvent(_run, kind, buffer, part));
}
