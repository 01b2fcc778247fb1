namespace FlexGen.Tensors.Models;

/// <summary>
/// An OPT model's shape, FlexGen's <c>OptConfig</c>. Presets, Hugging Face config.json loading and the
/// byte formulas are filled in by the foundation issue.
/// </summary>
public sealed record OptConfig
{
    public required string Name { get; init; }
    public int MaxSeqLen { get; init; } = 2048;
    public required int NumHiddenLayers { get; init; }
    public required int NHead { get; init; }
    public required int HiddenSize { get; init; }
    public required int InputDim { get; init; }
    public required int FfnEmbedDim { get; init; }
    public int PadTokenId { get; init; } = 1;
    public int VocabSize { get; init; } = 50272;
    public int BosTokenId { get; init; } = 2;
    public int EosTokenId { get; init; } = 2;

    /// <summary>Bytes per stored weight/cache element (float16).</summary>
    public int DtypeBytes { get; init; } = 2;

    public int HeadDim => HiddenSize / NHead;
}
