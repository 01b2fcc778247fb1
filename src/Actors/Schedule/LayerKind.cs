namespace FlexGen.Actors.Schedule;

/// <summary>The kinds of FlexGen layers in execution order (InputEmbed, blocks, OutputEmbed).</summary>
public enum LayerKind
{
    InputEmbed,
    /// <summary>Attention + MLP of one transformer block (sep_layer off).</summary>
    TransformerLayer,
    /// <summary>The attention half of a block (sep_layer on).</summary>
    SelfAttention,
    /// <summary>The MLP half of a block (sep_layer on).</summary>
    Mlp,
    OutputEmbed,
}

public static class LayerKindExtensions
{
    /// <summary>Layers with a KV cache: the ones that contain attention.</summary>
    public static bool HasCache(this LayerKind kind) => kind is LayerKind.TransformerLayer or LayerKind.SelfAttention;

    /// <summary>
    /// The layer list FlexGen builds for a model of <paramref name="numBlocks"/> transformer blocks:
    /// InputEmbed, per block one TransformerLayer (or SelfAttention + Mlp with sep-layer), OutputEmbed.
    /// </summary>
    public static IReadOnlyList<LayerKind> BuildLayers(int numBlocks, bool sepLayer)
    {
        if (numBlocks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "a model needs at least one transformer block");
        }

        var layers = new List<LayerKind> { LayerKind.InputEmbed };
        for (int b = 0; b < numBlocks; b++)
        {
            if (sepLayer)
            {
                layers.Add(LayerKind.SelfAttention);
                layers.Add(LayerKind.Mlp);
            }
            else
            {
                layers.Add(LayerKind.TransformerLayer);
            }
        }

        layers.Add(LayerKind.OutputEmbed);
        return layers;
    }

    /// <summary>The transformer block index (decoder.layers.N) of layer <paramref name="j"/> in a layer list.</summary>
    public static int BlockIndexOf(IReadOnlyList<LayerKind> layers, int j)
    {
        int block = -1;
        for (int n = 1; n <= j; n++)
        {
            if (layers[n] is LayerKind.TransformerLayer or LayerKind.SelfAttention)
            {
                block++;
            }
        }

        return block;
    }
}
