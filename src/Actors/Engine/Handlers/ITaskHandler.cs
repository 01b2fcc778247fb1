namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;

/// <summary>
/// Runs one actor's part of one kind of task. Results go to the run's buffers, never freed here: a buffer a part's
/// stream may still use is freed by the store after the part's release. Called inside the part's dispose scope.
/// </summary>
internal interface ITaskHandler
{
    /// <returns>The bytes the part moved or read.</returns>
    long Execute(TaskPart part);
}
