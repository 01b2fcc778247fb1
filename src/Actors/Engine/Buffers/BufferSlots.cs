namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Actors.Schedule;

/// <summary>
/// The buffers of one kind, by key. Producers add them; consumers read them; the store frees each after its last
/// consumer part's release. All bookkeeping runs under the store's lock (parts of different tasks run on different
/// threads at once); the tensors themselves need none, because the coordinator runs a consumer only after its producer.
/// </summary>
internal sealed class BufferSlots<TKey, TValue>
    where TKey : struct, IBufferKey
    where TValue : class, IDisposable
{
    private readonly BlockBuffers _store;
    private readonly Dictionary<TKey, HeldBuffer> _held = new();

    public BufferSlots(BlockBuffers store, BufferKind<TKey> kind)
    {
        _store = store;
        Kind = kind;
    }

    public BufferKind<TKey> Kind { get; }

    /// <summary>Holds <paramref name="value"/> (owned from here on, also when this throws) made by <paramref name="producer"/>.</summary>
    public void Add(TKey key, TValue value, TaskPart producer)
    {
        lock (_store.Gate)
        {
            if (_held.ContainsKey(key))
            {
                value.Dispose();
                throw new InvalidOperationException($"{key.Id(Kind.Name)} was produced twice (again by {producer})");
            }

            _held[key] = _store.Hold(key.Id(Kind.Name), Kind.Producer, Kind.Consumers(key), value, producer, () => _held.Remove(key));
        }
    }

    /// <summary>
    /// The buffer at <paramref name="key"/>, made by <paramref name="make"/> when it is not held yet: for buffers that
    /// several parts of one task fill (a load split over disk-io and copy, a compute split over GPU and CPU rows).
    /// </summary>
    public TValue GetOrAdd(TKey key, Func<TValue> make, TaskPart producer)
    {
        lock (_store.Gate)
        {
            if (!_held.TryGetValue(key, out var held))
            {
                held = _store.Hold(key.Id(Kind.Name), Kind.Producer, Kind.Consumers(key), make(), producer, () => _held.Remove(key));
                _held[key] = held;
            }

            return (TValue)held.Value;
        }
    }

    public TValue Get(TKey key) =>
        TryGet(key, out var value) ? value : throw new InvalidOperationException($"{key.Id(Kind.Name)} is not held: its producer did not run or it was released");

    public bool TryGet(TKey key, out TValue value)
    {
        lock (_store.Gate)
        {
            value = _held.TryGetValue(key, out var held) ? (TValue)held.Value : null!;
            return held is not null;
        }
    }

    /// <summary>
    /// Hands the buffer over to <paramref name="taker"/>, which must be its last consumer part (no other part will read
    /// it): the caller owns the value from here on, typically adding it as a buffer of another kind.
    /// </summary>
    public TValue Take(TKey key, TaskPart taker)
    {
        lock (_store.Gate)
        {
            if (!_held.TryGetValue(key, out var held))
            {
                throw new InvalidOperationException($"{key.Id(Kind.Name)} is not held: its producer did not run or it was released");
            }

            _store.Move(held, taker);
            return (TValue)held.Value;
        }
    }

    /// <summary>Every buffer still held, forgotten here (the store frees them when the run is disposed).</summary>
    public IReadOnlyList<HeldBuffer> RemoveAll()
    {
        var all = _held.Values.ToArray();
        _held.Clear();
        return all;
    }
}

/// <summary>A held buffer: its value, its consumer tasks, and the consumer parts that have not released it yet.</summary>
internal sealed class HeldBuffer(BufferId id, IDisposable value, IReadOnlyList<BlockTask> consumerTasks, HashSet<TaskPart> pending, Action forget)
{
    public BufferId Id { get; } = id;

    public IDisposable Value { get; } = value;

    public IReadOnlyList<BlockTask> ConsumerTasks { get; } = consumerTasks;

    public HashSet<TaskPart> Pending { get; } = pending;

    /// <summary>Removes the buffer from its slots.</summary>
    public void Forget() => forget();
}
