namespace FlexGen.Tensors.Models;

/// <summary>
/// A model's shape as the engine, placement and host see it, whatever its family: sizes, KV geometry, special
/// tokens and FlexGen's byte formulas. Each family derives a sealed record with its own fields (and its own
/// config.json names) and says which family it belongs to.
/// </summary>
public abstract record ModelConfig
{
    public required string Name { get; init; }

    /// <summary>The family that lays out, computes, converts and tokenizes this model.</summary>
    public abstract IModelFamily Family { get; }

    /// <summary>Transformer blocks.</summary>
    public abstract int NumBlocks { get; }

    /// <summary>Width of the hidden states between layers.</summary>
    public abstract int HiddenSize { get; init; }

    /// <summary>Query heads per attention layer.</summary>
    public abstract int NumHeads { get; }

    /// <summary>Key/value heads per attention layer (fewer than <see cref="NumHeads"/> with grouped-query attention).</summary>
    public virtual int KvHeads => NumHeads;

    public virtual int HeadDim => HiddenSize / NumHeads;

    /// <summary>Width of the MLP's inner layer (<c>ffn_dim</c>, <c>intermediate_size</c>), which the cost model reads.</summary>
    public abstract int FfnSize { get; }

    /// <summary>
    /// Whether the model gives <see cref="HeadDim"/> itself (config.json's <c>head_dim</c>) rather than deriving it as
    /// hidden / heads: the attention width heads * head_dim may then differ from the hidden size, which need not be a
    /// multiple of the heads.
    /// </summary>
    public virtual bool HeadDimGiven => false;

    public abstract int VocabSize { get; init; }

    /// <summary>Positions the model reads (prompt + generated - 1 at most).</summary>
    public abstract int MaxSeqLen { get; init; }

    public abstract int PadTokenId { get; init; }

    public abstract int BosTokenId { get; init; }

    public abstract int EosTokenId { get; init; }

    /// <summary>Bytes per stored weight/cache element (float16).</summary>
    public abstract int DtypeBytes { get; init; }

    /// <summary>Whether a prompt of <paramref name="promptLen"/> tokens leaves room for <paramref name="genLen"/> new
    /// ones: the model reads prompt_len + gen_len - 1 positions (the last new token is never fed back).</summary>
    public bool Fits(long promptLen, long genLen) => promptLen + genLen - 1 <= MaxSeqLen;

    /// <summary>FlexGen's <c>model_bytes()</c>, as the family defines it (the planner's number, not the exact sum of specs).</summary>
    public abstract long ModelBytes();

    /// <summary>FlexGen's <c>cache_bytes</c>: 2 (k, v) * batch * seq * blocks * kv_heads * head_dim * dtype bytes.</summary>
    public long CacheBytes(long batchSize, long seqLen) =>
        2L * batchSize * seqLen * NumBlocks * KvHeads * HeadDim * DtypeBytes;

    /// <summary>FlexGen's <c>hidden_bytes</c>: batch * seq * hidden * dtype bytes.</summary>
    public long HiddenBytes(long batchSize, long seqLen) => batchSize * seqLen * HiddenSize * (long)DtypeBytes;

    /// <summary>
    /// This model with <paramref name="blocks"/> transformer blocks, every other field the same. Placement sizes a model
    /// of any depth from a 1- and a 2-block copy (its blocks are alike), so a model too large for its budgets is refused
    /// without laying out its layers.
    /// </summary>
    public abstract ModelConfig WithBlocks(int blocks);

    /// <summary>The layers in execution order, as the family lays them out (see <see cref="IModelFamily.Layers"/>).</summary>
    public IReadOnlyList<LayerSpec> Layers(bool sepLayer) => Family.Layers(this, sepLayer);

    /// <summary>How the family computes this model's layers.</summary>
    public ILayerCompute Compute() => Family.Compute(this);
}
