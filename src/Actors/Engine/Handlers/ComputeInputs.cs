namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>What a compute part reads besides its hidden state: the layer's weights and the attention mask.</summary>
internal sealed class ComputeInputs(BlockRunContext run)
{
    /// <summary>
    /// The weights of layer j for token i as torch tensors on <paramref name="device"/>, in the layer's order: GPU-homed
    /// ones in place, others as loaded (those loaded in another dtype converted here first, <see cref="LoadedWeights.Convert"/>,
    /// unless the layer's products of <paramref name="rows"/> rows multiply them as stored, <see cref="LayerMath.MultipliesAsStored"/>);
    /// compressed ones decompressed here (the copies go to <paramref name="temporaries"/>).
    /// </summary>
    public Tensor[] Weights(int i, int j, long rows, Device device, ComputeSettings compute, List<Tensor> temporaries, out long bytes)
    {
        var homes = run.Backend.WeightHomes(j);
        run.Buffers.Weights.TryGet(new LayerKey(i, j), out var loaded);
        loaded?.Convert(stored => LayerMath.MultipliesAsStored(stored.Dtype, rows, compute, device));
        var result = new Tensor[homes.Count];
        bytes = 0;
        for (int w = 0; w < homes.Count; w++)
        {
            var source = loaded?.Plain(w) ?? homes[w];
            result[w] = TierTensors.Plain(source, null, device, temporaries)
                ?? throw new InvalidOperationException($"weight {homes[w].Name} of layer {j} was not loaded for token {i}");
            bytes += TierTensors.StoredBytes(homes[w]);
        }

        return result;
    }

    /// <summary>
    /// (count * b, prompt_len + i) bool: the prompt masks of GPU batches [first, first + count), then i generated (real)
    /// positions.
    /// </summary>
    public Tensor Mask(int i, int first, int count, Device device)
    {
        int rows = run.BatchRows * count;
        long width = run.Block.PromptLen + i;
        var flat = new bool[rows * width];
        for (int r = 0; r < rows; r++)
        {
            run.Block.AttentionMask[first * run.BatchRows + r].CopyTo(0, flat, (int)(r * width), run.Block.PromptLen);
            Array.Fill(flat, true, (int)(r * width + run.Block.PromptLen), i);
        }

        return tensor(flat, [rows, width], device: device);
    }
}
