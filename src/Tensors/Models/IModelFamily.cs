using FlexGen.Tensors.Layers;
using static TorchSharp.torch;

namespace FlexGen.Tensors.Models;

/// <summary>
/// A model family behind the engine's one seam: config, layer layout and weight specs (dummy init included, through
/// <see cref="WeightSpec.Init"/>), layer compute, checkpoint naming, tokenizer. Registered once with
/// <see cref="ModelFamilyAttribute"/> in the family's own folder; <see cref="ModelFamilies"/> finds it.
/// </summary>
public interface IModelFamily
{
    /// <summary>Display name, e.g. in "only X models are supported".</summary>
    string Name { get; }

    /// <summary>Whether this family reads a Hugging Face config.json of this <c>model_type</c> / <c>architectures</c>.</summary>
    bool Reads(string modelType, IReadOnlyList<string> architectures);

    /// <summary>The config of a config.json this family <see cref="Reads"/>; refuses what its layers cannot run.</summary>
    /// <exception cref="ModelConfigException">a missing or mistyped key.</exception>
    /// <exception cref="UnsupportedModelException">a valid config of a variant the family does not run.</exception>
    ModelConfig ReadConfig(HuggingFaceConfig config);

    /// <summary>The preset names, smallest first (for help text).</summary>
    IReadOnlyList<string> PresetNames { get; }

    /// <summary>Whether <paramref name="name"/> names a preset of this family (refused presets included).</summary>
    bool IsPreset(string name);

    /// <exception cref="UnsupportedModelException">a known preset the family refuses (with the reason).</exception>
    /// <exception cref="UnknownModelException">not a preset of this family.</exception>
    ModelConfig FromPreset(string name);

    /// <summary>
    /// A model of the family's architecture with the given size (dummy-weight benchmarks and tests): MLP width and
    /// other ratios as the family's usual models have them.
    /// </summary>
    ModelConfig OfSize(string name, int blocks, int hiddenSize, int heads, int vocabSize, int maxSeqLen);

    /// <summary>The layers in execution order with their weight specs (see <see cref="LayerSpec.InExecutionOrder"/>).</summary>
    IReadOnlyList<LayerSpec> Layers(ModelConfig config, bool sepLayer);

    /// <summary>The layer math of <paramref name="config"/>.</summary>
    ILayerCompute Compute(ModelConfig config);

    /// <summary>How <c>convert</c> maps a Hugging Face checkpoint onto the model folder's files.</summary>
    CheckpointNaming Checkpoint(ModelConfig config);

    /// <summary>The tokenizer of a model folder of this family.</summary>
    TokenizerSpec Tokenizer(ModelConfig config);
}

/// <summary>
/// A family's layer math, as the engine calls it: weights are the layer's tensors in spec order (one weight group:
/// a joint block is split by <see cref="LayerSpec.Group{T}"/>), in any dtype, on any device; results are in the
/// compute dtype on the device of the input. Every call owns its temporaries (a dispose scope) and returns new tensors.
/// </summary>
public interface ILayerCompute
{
    /// <summary>
    /// (batch, new_seq) int64 ids, (batch, total_seq) mask -> hidden (batch, new_seq, h). Gathers the rows it needs before
    /// converting them: streamed tables arrive in their stored dtype (<see cref="LayerKinds.GathersWeightRows"/>).
    /// </summary>
    Tensor Embed(Tensor tokenIds, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute);

    /// <summary>Attention over the prompt: hidden (batch, s, h), mask (batch, s) -> hidden and the cache entries of [0, s).</summary>
    AttentionOutput Prefill(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights, ComputeSettings compute);

    /// <summary>
    /// Attention of one new token (batch, 1, h) over a cache split along dim 1 (batch * kv_heads rows) into
    /// <paramref name="segments"/>, mask (batch, t + 1) -> hidden and the new token's cache entries.
    /// </summary>
    AttentionOutput Decode(Tensor hidden, Tensor attentionMask, IReadOnlyList<Tensor> weights,
        IReadOnlyList<CacheSegment> segments, ComputeSettings compute, double attnSparsity);

    /// <summary>(batch, seq, h) -> (batch, seq, h).</summary>
    Tensor Mlp(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute);

    /// <summary>(batch, seq, h) -> logits of the last position (batch, vocab); the engine chooses the tokens (<see cref="TokenChoice"/>).</summary>
    Tensor Logits(Tensor hidden, IReadOnlyList<Tensor> weights, ComputeSettings compute);
}

/// <summary>
/// How a Hugging Face checkpoint maps onto a model folder (one .npy per weight spec).
/// </summary>
/// <param name="SourceNames">For a model-folder file name, the checkpoint tensor names to read it from, preferred first.</param>
/// <param name="TiedHead">The checkpoint's output-head tensor when the family ties it to an input file (it must then
/// equal that file's source, and is not written); null when the head is a weight of its own or absent.</param>
/// <param name="TiedHeadFile">The model-folder file the tied head must equal.</param>
/// <param name="SideFiles">Files copied as they are (tokenizer, generation config).</param>
public sealed record CheckpointNaming(
    Func<string, IReadOnlyList<string>> SourceNames,
    string? TiedHead,
    string? TiedHeadFile,
    IReadOnlyList<string> SideFiles);

/// <summary>Tokenizer algorithms the host implements.</summary>
public enum TokenizerKind
{
    /// <summary>GPT-2 byte-level BPE from a vocab.json and a merges.txt.</summary>
    ByteLevelBpe,

    /// <summary>A Hugging Face tokenizer.json (byte-level BPE: Llama 3, Qwen2).</summary>
    TokenizerJson,

    /// <summary>A SentencePiece tokenizer.model (Llama 2, Mistral).</summary>
    SentencePiece,
}

/// <summary>Which tokenizer a model folder uses and its conventions.</summary>
/// <param name="Kind">The algorithm (which also fixes the files it reads from the model folder).</param>
/// <param name="BosTokenId">Begin-of-sequence id.</param>
/// <param name="PrependBos">Whether every prompt starts with <paramref name="BosTokenId"/>.</param>
/// <param name="SpecialTokenIds">Ids left out when decoding (pad, BOS, EOS).</param>
/// <param name="StopAtEos">Text generation stops at the model's EOS unless told otherwise (chat-era models end their
/// answers with it); false: it runs the full length, as FlexGen does.</param>
public sealed record TokenizerSpec(
    TokenizerKind Kind,
    int BosTokenId,
    bool PrependBos,
    IReadOnlyList<int> SpecialTokenIds,
    bool StopAtEos = false);

/// <summary>Registers a model family with <see cref="ModelFamilies"/>: one line in the family's folder.</summary>
[AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
public sealed class ModelFamilyAttribute(Type family) : Attribute
{
    /// <summary>An <see cref="IModelFamily"/> with a public parameterless constructor.</summary>
    public Type Family { get; } = family;

    /// <summary>
    /// Where the family is listed among the registered ones (then by name): the first is the default of family-free
    /// tools (bench-pipeline) and leads "only ... models are supported".
    /// </summary>
    public int Order { get; init; }
}
