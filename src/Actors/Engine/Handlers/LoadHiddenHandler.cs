namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// LoadHidden(i, j, k): the compute's input on the GPU tier. At j = 0 the token ids (the prompt at i = 0, else the
/// tokens generated at i - 1), or on a later pipeline stage the hidden state the stage before sent; otherwise the previous layer's output from the activation home, taken over as it is when
/// that home is the GPU tier, else copied (the parked copy is freed after this part's release).
/// </summary>
internal sealed class LoadHiddenHandler(BlockRunContext run) : ITaskHandler
{
    public long Execute(TaskPart part)
    {
        var key = BatchKey.Of(part.Task);
        var (i, j, k) = (key.Token, key.Layer, key.Batch);
        if (j == 0 && run.InputFromStage)
        {
            using var received = run.Stage.TakeInput(i, k).ToTensor(); // (b, s, h)
            var input = run.Gpu.CopyOf(received, $"stage-input.i{i}.k{k}");
            run.Buffers.HiddenIn.Add(key, input, part);
            return input.Bytes;
        }

        if (j == 0)
        {
            var ids = i == 0
                ? Enumerable.Range(k * run.BatchRows, run.BatchRows).SelectMany(r => run.Block.PromptIds[r]).ToArray()
                : run.Tokens.PreviousTokens(i, k);
            using var tensor = torch.tensor(ids, [run.BatchRows, ids.Length / run.BatchRows], ScalarType.Int64); // (b, s)
            var onGpu = run.Gpu.CopyOf(tensor, $"ids.i{i}.k{k}");
            run.Buffers.HiddenIn.Add(key, onGpu, part);
            return onGpu.Bytes;
        }

        var previous = key with { Layer = j - 1 };
        var parked = run.Buffers.ParkedHidden.Get(previous); // (b, s, h)
        if (parked.Home == TierKind.Gpu)
        {
            run.Buffers.HiddenIn.Add(key, (DeviceTensor)run.Buffers.ParkedHidden.Take(previous, part), part);
            return 0;
        }

        run.Buffers.HiddenIn.Add(key, (DeviceTensor)TierCopy.CopyTo(parked, run.Gpu), part);
        return parked.Bytes;
    }
}
