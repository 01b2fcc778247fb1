namespace FlexGen.Host.Text;

using Microsoft.ML.Tokenizers;

/// <summary>
/// OPT's tokenizer: GPT-2 byte-level BPE from a model folder's vocab.json and merges.txt, with OPT's
/// conventions: no prefix space, the BOS id (2, "&lt;/s&gt;") prepended to every prompt, special ids
/// (pad, BOS, EOS) dropped when decoding.
/// </summary>
public sealed class OptTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";

    private readonly CodeGenTokenizer _bpe;
    private readonly HashSet<int> _specialIds;

    public int BosTokenId { get; }

    private OptTokenizer(CodeGenTokenizer bpe, int bosTokenId, IEnumerable<int> specialIds)
    {
        _bpe = bpe;
        BosTokenId = bosTokenId;
        _specialIds = [.. specialIds];
    }

    /// <summary>True when the folder has the two files the tokenizer needs.</summary>
    public static bool IsPresent(string folder) =>
        File.Exists(Path.Combine(folder, VocabFileName)) && File.Exists(Path.Combine(folder, MergesFileName));

    /// <summary>Loads the tokenizer of a model folder.</summary>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing (names the file).</exception>
    /// <exception cref="InvalidDataException">A file cannot be parsed (names the file).</exception>
    public static OptTokenizer Load(string folder, int bosTokenId = 2, int padTokenId = 1, int eosTokenId = 2)
    {
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
        return new OptTokenizer(bpe, bosTokenId, [bosTokenId, padTokenId, eosTokenId]);
    }

    /// <summary>
    /// CodeGenTokenizer requires its unknown token "&lt;|endoftext|&gt;" in the vocabulary; OPT's vocabulary may lack
    /// it (its specials are &lt;s&gt; &lt;pad&gt; &lt;/s&gt; &lt;unk&gt;). Then it is added under an id past the vocabulary,
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

    /// <summary>Token ids of a prompt, BOS first, as OPT's Hugging Face tokenizer gives them.</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        var ids = _bpe.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false);
        var result = new List<int>(ids.Count + 1) { BosTokenId };
        result.AddRange(ids);
        return result;
    }

    /// <summary>Text of generated ids, special ids (pad, BOS, EOS) left out.</summary>
    public string Decode(IEnumerable<long> ids) =>
        _bpe.Decode(ids.Select(i => (int)i).Where(i => !_specialIds.Contains(i))) ?? string.Empty;
}
