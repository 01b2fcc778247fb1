namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Actors.Schedule;

/// <summary>A buffer key; <see cref="Id"/> names the buffer for events and errors.</summary>
internal interface IBufferKey
{
    BufferId Id(string kind);
}

/// <summary>(i, j): buffers shared by all GPU batches of a layer and token (loaded weights).</summary>
internal readonly record struct LayerKey(int Token, int Layer) : IBufferKey
{
    public static LayerKey Of(BlockTask task) => new(task.Token, task.Layer);

    public BufferId Id(string kind) => new(kind, Token, Layer, null);
}

/// <summary>(i, j, k): buffers of one GPU batch of a layer and token.</summary>
internal readonly record struct BatchKey(int Token, int Layer, int Batch) : IBufferKey
{
    public static BatchKey Of(BlockTask task) => new(task.Token, task.Layer, task.Batch);

    public BlockTask Task(TaskKind kind) => new(kind, Token, Layer, Batch);

    public BufferId Id(string kind) => new(kind, Token, Layer, Batch);
}
