namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;

/// <summary>One actor's part of a task (a task routed to two actors has two parts).</summary>
public readonly record struct TaskPart(BlockTask Task, PipelineActorKind Actor)
{
    public override string ToString() => $"{Task}@{Actor}";
}

/// <summary>A buffer between tasks of one run: its kind (see <see cref="BlockBuffers"/>) and key; weights have no batch.</summary>
public readonly record struct BufferId(string Kind, int Token, int Layer, int? Batch)
{
    public override string ToString() => Batch is { } k ? $"{Kind}({Token},{Layer},{k})" : $"{Kind}({Token},{Layer})";
}

public enum BufferEventKind
{
    /// <summary>A producer part made <see cref="BufferEvent.Buffer"/>.</summary>
    Produced,

    /// <summary><see cref="BufferEvent.Part"/> was released (its stream finished); the buffers it was the last consumer of follow.</summary>
    PartReleased,

    /// <summary>Freed within the release of <see cref="BufferEvent.Part"/>, its last consumer part.</summary>
    Freed,

    /// <summary>Handed over, not freed, by <see cref="BufferEvent.Part"/>, its last consumer part, into a buffer of another kind.</summary>
    Moved,

    /// <summary>Still held when the run was disposed (cancellation, failure, or a block stopped early) and freed then.</summary>
    FreedAtDispose,
}

/// <summary>What happened to a run's buffers, in the order the store did it.</summary>
public sealed record BufferEvent(RunId Run, BufferEventKind Kind, BufferId? Buffer, TaskPart? Part)
{
    public override string ToString() => $"{Kind} {Buffer?.ToString() ?? ""} {Part?.ToString() ?? ""}".TrimEnd();
}

/// <summary>
/// Hears every buffer event of the runs of a <see cref="TorchPipelineBackend"/> (lifetime tests, diagnostics). Called
/// under the run's buffer lock, so a run's events arrive in order; keep it quick and do not call back into the run.
/// </summary>
public interface IBufferObserver
{
    void OnEvent(BufferEvent e);
}
