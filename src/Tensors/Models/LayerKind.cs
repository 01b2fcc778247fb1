namespace FlexGen.Tensors.Models;

/// <summary>The kinds of layer FlexGen runs, in its execution order; every model family maps onto them.</summary>
public enum LayerKind
{
    /// <summary>Token ids to hidden states (the family's embedding, positions included when learned).</summary>
    InputEmbedding,

    /// <summary>The attention half of a transformer block (with <c>sep_layer</c>); owns a KV cache.</summary>
    Attention,

    /// <summary>The MLP half of a transformer block (with <c>sep_layer</c>).</summary>
    Mlp,

    /// <summary>Attention then the MLP of the same block (FlexGen's joint TransformerLayer); owns a KV cache.</summary>
    Block,

    /// <summary>Final norm, logits and the next token.</summary>
    OutputEmbedding,
}

/// <summary>Helpers over <see cref="LayerKind"/>.</summary>
public static class LayerKinds
{
    /// <summary>Layers with a KV cache: the ones that contain attention.</summary>
    public static bool HasKvCache(this LayerKind kind) => kind is LayerKind.Block or LayerKind.Attention;

    /// <summary>
    /// Layers that read only the rows of their weights the token ids pick (the embedding tables): streamed to the compute
    /// tier, their weights stay in their stored dtype and the family converts the rows it gathers
    /// (<see cref="ILayerCompute.Embed"/>), instead of the whole table being converted at every step.
    /// </summary>
    public static bool GathersWeightRows(this LayerKind kind) => kind is LayerKind.InputEmbedding;

    /// <summary>
    /// The layer list FlexGen builds for a model of <paramref name="numBlocks"/> transformer blocks:
    /// InputEmbedding, per block one Block (or Attention + Mlp with sep-layer), OutputEmbedding.
    /// </summary>
    public static IReadOnlyList<LayerKind> BuildLayers(int numBlocks, bool sepLayer)
    {
        if (numBlocks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "a model needs at least one transformer block");
        }

        var layers = new List<LayerKind> { LayerKind.InputEmbedding };
        for (int b = 0; b < numBlocks; b++)
        {
            if (sepLayer)
            {
                layers.Add(LayerKind.Attention);
                layers.Add(LayerKind.Mlp);
            }
            else
            {
                layers.Add(LayerKind.Block);
            }
        }

        layers.Add(LayerKind.OutputEmbedding);
        return layers;
    }

    /// <summary>The transformer block index of layer <paramref name="j"/> in a layer list (-1 for the input embedding).</summary>
    public static int BlockIndexOf(IReadOnlyList<LayerKind> layers, int j)
    {
        int block = -1;
        for (int n = 1; n <= j; n++)
        {
            if (layers[n] is LayerKind.Block or LayerKind.Attention)
            {
                block++;
            }
        }

        return block;
    }
}
