namespace FlexGen.Actors.Schedule;

using FlexGen.Tensors.Models;

/// <summary>Helpers over FlexGen's layer kinds (<see cref="OptLayerKind"/>, from the weight specs).</summary>
public static class LayerKinds
{
    /// <summary>Layers with a KV cache: the ones that contain attention.</summary>
    public static bool HasCache(this OptLayerKind kind) => kind is OptLayerKind.TransformerLayer or OptLayerKind.SelfAttention;

    /// <summary>
    /// The layer list FlexGen builds for a model of <paramref name="numBlocks"/> transformer blocks:
    /// InputEmbed, per block one TransformerLayer (or SelfAttention + Mlp with sep-layer), OutputEmbed.
    /// </summary>
    public static IReadOnlyList<OptLayerKind> BuildLayers(int numBlocks, bool sepLayer)
    {
        if (numBlocks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "a model needs at least one transformer block");
        }

        var layers = new List<OptLayerKind> { OptLayerKind.InputEmbed };
        for (int b = 0; b < numBlocks; b++)
        {
            if (sepLayer)
            {
                layers.Add(OptLayerKind.SelfAttention);
                layers.Add(OptLayerKind.Mlp);
            }
            else
            {
                layers.Add(OptLayerKind.TransformerLayer);
            }
        }

        layers.Add(OptLayerKind.OutputEmbed);
        return layers;
    }

    /// <summary>The transformer block index (decoder.layers.N) of layer <paramref name="j"/> in a layer list.</summary>
    public static int BlockIndexOf(IReadOnlyList<OptLayerKind> layers, int j)
    {
        int block = -1;
        for (int n = 1; n <= j; n++)
        {
            if (layers[n] is OptLayerKind.TransformerLayer or OptLayerKind.SelfAttention)
            {
                block++;
            }
        }

        return block;
    }
}
