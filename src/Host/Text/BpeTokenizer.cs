namespace FlexGen.Host.Text;

using FlexGen.Tensors.Models;
using Microsoft.ML.Tokenizers;

/// <summary>
/// GPT-2 byte-level BPE (<see cref="TokenizerKind.ByteLevelBpe"/>) from a model folder's vocab.json and merges.txt,
/// with the conventions the model family's <see cref="TokenizerSpec"/> gives: no prefix space, the BOS id prepended
/// to every prompt when the family does so, special ids (pad, BOS, EOS) dropped when decoding.
/// </summary>
public sealed class BpeTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";

    private readonly CodeGenTokenizer _bpe;
    private readonly HashSet<int> _specialIds;
    private readonly bool _prependBos;

    public int BosTokenId { get; }

    private BpeTokenizer(CodeGenTokenizer bpe, TokenizerSpec spec)
    {
        _bpe = bpe;
        BosTokenId = spec.BosTokenId;
        _prependBos = spec.PrependBos;
        _specialIds = [.. spec.SpecialTokenIds];
    }

    /// <summary>True when the folder has the two files the tokenizer needs.</summary>
    public static bool IsPresent(string folder) =>
        File.Exists(Path.Combine(folder, VocabFileName)) && File.Exists(Path.Combine(folder, MergesFileName));

    /// <summary>Loads the tokenizer of a model folder, with its family's conventions.</summary>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing (names the file).</exception>
    /// <exception cref="InvalidDataException">A file cannot be parsed (names the file).</exception>
    public static BpeTokenizer Load(string folder, TokenizerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Kind != TokenizerKind.ByteLevelBpe)
            throw new NotSupportedException($"{nameof(BpeTokenizer)} reads byte-level BPE, not {spec.Kind}.");
        string vocabPath = Path.Combine(folder, VocabFileName);
        string mergesPath = Path.Combine(folder, MergesFileName);
        foreach (var p in new[] { vocabPath, mergesPath })
            if (!File.Exists(p)) throw new FileNotFoundException($"Tokenizer file not found: {p}", p);
        CodeGenTokenizer bpe;
        try
        {
            using var vocab = VocabularyWithUnknownToken(vocabPath);
            using var merges = File.OpenRead(mergesPath);
            bpe = CodeGenTokenizer.Create(vocab, merges, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception ex) when (ex is not IOException and not InvalidDataException)
        {
            throw new InvalidDataException($"Cannot read the tokenizer from {vocabPath} and {mergesPath}: {ex.Message}", ex);
        }
        return new BpeTokenizer(bpe, spec);
    }

    /// <summary>
    /// CodeGenTokenizer requires its unknown token "&lt;|endoftext|&gt;" in the vocabulary; a model's vocabulary
    /// may lack it (e.g. when its specials are &lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;). Then it is added under an id past the vocabulary,
    /// which byte-level BPE never produces from text.
    /// </summary>
    private static Stream VocabularyWithUnknownToken(string vocabPath)
    {
        const string unknown = "<|endoftext|>";
        if (System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(vocabPath)) is not System.Text.Json.Nodes.JsonObject vocab)
            throw new InvalidDataException($"{vocabPath}: not a JSON object of token -> id.");
        if (!vocab.ContainsKey(unknown))
            vocab[unknown] = vocab.Select(kv => kv.Value?.GetValue<int>() ?? 0).DefaultIfEmpty(-1).Max() + 1;
        return new MemoryStream(System.Text.Encoding.UTF8.GetBytes(vocab.ToJsonString()));
    }

    /// <summary>Token ids of a prompt (BOS first when the family prepends it), as the Hugging Face tokenizer gives them.</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        var ids = _bpe.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false);
        var result = new List<int>(ids.Count + 1);
        if (_prependBos) result.Add(BosTokenId);
        result.AddRange(ids);
        return result;
    }

    /// <summary>Text of generated ids, special ids (pad, BOS, EOS) left out.</summary>
    public string Decode(IEnumerable<long> ids) =>
        _bpe.Decode(ids.Select(i => (int)i).Where(i => !_specialIds.Contains(i))) ?? string.Empty;
}
