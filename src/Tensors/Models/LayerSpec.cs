namespace FlexGen.Tensors.Models;

/// <summary>
/// One layer of FlexGen's execution order (index <c>j</c> of the block schedule) and its weights, as a model
/// family lays it out.
/// </summary>
/// <param name="Index">Position in the execution order (FlexGen's <c>j</c>).</param>
/// <param name="Kind">What the layer computes.</param>
/// <param name="BlockIndex">The transformer block the layer belongs to; null for the embeddings.</param>
/// <param name="WeightGroups">
/// The weights in the family's order, grouped as FlexGen places them: each group is one <c>init_weight_list</c>
/// call (a <see cref="LayerKind.Block"/> has two groups, attention then MLP; every other layer one).
/// </param>
public sealed record LayerSpec(
    int Index,
    LayerKind Kind,
    int? BlockIndex,
    IReadOnlyList<IReadOnlyList<WeightSpec>> WeightGroups)
{
    /// <summary>Group of a <see cref="LayerKind.Block"/>'s attention weights.</summary>
    public const int AttentionGroup = 0;

    /// <summary>Group of a <see cref="LayerKind.Block"/>'s MLP weights.</summary>
    public const int MlpGroup = 1;

    /// <summary>All weights of the layer in the family's order (the groups concatenated).</summary>
    public IReadOnlyList<WeightSpec> Weights { get; } = WeightGroups.SelectMany(g => g).ToArray();

    /// <summary>Whether the layer owns a KV cache (one per GPU batch).</summary>
    public bool HasKvCache => Kind.HasKvCache();

    /// <summary>Uncompressed bytes of all weights of the layer.</summary>
    public long WeightBytes => Weights.Sum(w => w.Bytes);

    /// <summary>
    /// The items of weight group <paramref name="group"/> out of <paramref name="all"/>, one item per weight of the
    /// layer in spec order (loaded tensors, placements): how a joint block's weights are split, by group, never by
    /// a count.
    /// </summary>
    public IReadOnlyList<T> Group<T>(IReadOnlyList<T> all, int group)
    {
        ArgumentNullException.ThrowIfNull(all);
        if (all.Count != Weights.Count)
            throw new ArgumentException($"{this} has {Weights.Count} weights, got {all.Count} items.", nameof(all));
        int start = WeightGroups.Take(group).Sum(g => g.Count);
        return all.Skip(start).Take(WeightGroups[group].Count).ToArray();
    }

    public override string ToString() => BlockIndex is { } i ? $"{Kind}[{i}] (j={Index})" : $"{Kind} (j={Index})";

    /// <summary>
    /// The layers in execution order (<see cref="LayerKinds.BuildLayers"/>) with each layer's weights from the
    /// family: the input embedding, per block attention and MLP (two layers with <paramref name="sepLayer"/>, else
    /// one block of two groups), the output embedding.
    /// </summary>
    public static IReadOnlyList<LayerSpec> InExecutionOrder(
        int numBlocks, bool sepLayer,
        IReadOnlyList<WeightSpec> inputEmbedding,
        Func<int, IReadOnlyList<WeightSpec>> attention,
        Func<int, IReadOnlyList<WeightSpec>> mlp,
        IReadOnlyList<WeightSpec> outputEmbedding)
    {
        var kinds = LayerKinds.BuildLayers(numBlocks, sepLayer);
        var layers = new List<LayerSpec>(kinds.Count);
        for (var j = 0; j < kinds.Count; j++)
        {
            int block = LayerKinds.BlockIndexOf(kinds, j);
            IReadOnlyList<IReadOnlyList<WeightSpec>> groups = kinds[j] switch
            {
                LayerKind.InputEmbedding => [inputEmbedding],
                LayerKind.Attention => [attention(block)],
                LayerKind.Mlp => [mlp(block)],
                LayerKind.Block => [attention(block), mlp(block)],
                _ => [outputEmbedding],
            };
            layers.Add(new LayerSpec(j, kinds[j], kinds[j] is LayerKind.InputEmbedding or LayerKind.OutputEmbedding ? null : block, groups));
        }

        return layers;
    }
}
