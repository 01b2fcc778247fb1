namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Tiers;

/// <summary>
/// StoreHidden(i, j, k): after the last layer, writes the token ids to the output, or on an earlier pipeline stage
/// hands the hidden state to the stage link for the next stage; otherwise parks the output at the
/// activation home (taken over as it is when that home is the GPU tier). The compute's output is freed after this
/// part's release. The ids a last-layer part wrote go back to the coordinator in its part result (<see cref="Written"/>).
/// </summary>
internal sealed class StoreHiddenHandler(BlockRunContext run) : ITaskHandler
{
    public long Execute(TaskPart part)
    {
        var key = BatchKey.Of(part.Task);
        var output = run.Buffers.HiddenOut.Get(key);
        if (key.Layer == run.Plan.Schedule.Shape.NumLayers - 1 && run.OutputToStage)
        {
            run.Stage.Send(key.Token, key.Batch, TensorPayload.Of(output.Data)); // (b, s, h)
            return output.Bytes;
        }

        if (key.Layer == run.Plan.Schedule.Shape.NumLayers - 1)
        {
            return run.Tokens.Write(key.Token, key.Batch, output); // (b, 1) ids
        }

        var home = run.Plan.Placement.Activations.Home;
        if (home == TierKind.Gpu)
        {
            run.Buffers.ParkedHidden.Add(key, run.Buffers.HiddenOut.Take(key, part), part);
            return 0;
        }

        run.Buffers.ParkedHidden.Add(key, TierCopy.CopyTo(output, run.Backend.Tiers[home]), part); // (b, s, h)
        return output.Bytes;
    }

    /// <summary>The token ids <paramref name="task"/>'s part wrote: those of the last layer; null for other layers.</summary>
    public GeneratedTokens? Written(BlockTask task) =>
        task.Layer == run.Plan.Schedule.Shape.NumLayers - 1 && !run.OutputToStage ? run.Tokens.Written(task.Token, task.Batch) : null;
}
