namespace FlexGen.Actors.Engine;

using System.Collections.Concurrent;
using FlexGen.Actors.Pipeline;

/// <summary>
/// What a pipeline stage's run exchanges with the other stages: inputs of its first layer as they arrive, outputs of its
/// last layer until the stage actor sends them. Plain bytes (no tensors), so nothing here needs freeing.
/// </summary>
internal sealed class StageLink
{
    private readonly ConcurrentDictionary<(int Token, int Batch), TensorPayload> _inputs = new();
    private readonly ConcurrentDictionary<(int Token, int Batch), TensorPayload> _outputs = new();

    public void Deliver(StageTensor input)
    {
        if (!_inputs.TryAdd((input.Token, input.Batch), input.Payload))
        {
            throw new InvalidOperationException($"the input of token {input.Token}, GPU batch {input.Batch} arrived twice");
        }
    }

    public TensorPayload TakeInput(int token, int batch) =>
        _inputs.TryRemove((token, batch), out var payload)
            ? payload
            : throw new InvalidOperationException($"the input of token {token}, GPU batch {batch} has not arrived");

    public void Send(int token, int batch, TensorPayload output) => _outputs[(token, batch)] = output;

    public StageTensor TakeOutput(int token, int batch) =>
        _outputs.TryRemove((token, batch), out var payload)
            ? new StageTensor(token, batch, payload)
            : throw new InvalidOperationException($"no output of token {token}, GPU batch {batch} was stored");
}
