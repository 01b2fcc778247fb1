namespace FlexGen.Host.Text;

using FlexGen.Tensors.Models;
using Microsoft.ML.Tokenizers;

/// <summary>
/// A model folder's tokenizer, of the kind the model family's <see cref="TokenizerSpec"/> names: GPT-2 byte-level BPE
/// (<see cref="TokenizerKind.ByteLevelBpe"/>) from vocab.json and merges.txt, a Hugging Face tokenizer.json
/// (<see cref="TokenizerKind.TokenizerJson"/>: byte-level BPE with its own split pattern, Llama 3 and Qwen2), or a
/// SentencePiece tokenizer.model (<see cref="TokenizerKind.SentencePiece"/>: Llama 2, Mistral). With the spec's
/// conventions: no prefix space (byte-level), the BOS id prepended to every prompt when the family does so (or as the
/// folder's tokenizer_config.json says with add_bos_token), special ids (pad, BOS, EOS) dropped when decoding.
/// </summary>
public sealed class BpeTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string TokenizerJsonFileName = "tokenizer.json";
    public const string SentencePieceFileName = "tokenizer.model";

    private readonly Tokenizer _bpe;
    private readonly HashSet<int> _specialIds;
    private readonly bool _prependBos;

    public int BosTokenId { get; }

    private BpeTokenizer(Tokenizer bpe, TokenizerSpec spec, bool prependBos)
    {
        _bpe = bpe;
        BosTokenId = spec.BosTokenId;
        _prependBos = prependBos;
        _specialIds = [.. spec.SpecialTokenIds];
    }

    /// <summary>True when the folder has the two files the byte-level BPE tokenizer needs.</summary>
    public static bool IsPresent(string folder) =>
        File.Exists(Path.Combine(folder, VocabFileName)) && File.Exists(Path.Combine(folder, MergesFileName));

    /// <summary>True when the folder has the files the tokenizer of <paramref name="spec"/>'s kind needs.</summary>
    public static bool IsPresent(string folder, TokenizerSpec spec) => spec.Kind switch
    {
        TokenizerKind.TokenizerJson => File.Exists(Path.Combine(folder, TokenizerJsonFileName)),
        TokenizerKind.SentencePiece => File.Exists(Path.Combine(folder, SentencePieceFileName)),
        _ => IsPresent(folder),
    };

    /// <summary>The files a tokenizer of <paramref name="kind"/> reads, for messages.</summary>
    public static string FilesOf(TokenizerKind kind) => kind switch
    {
        TokenizerKind.TokenizerJson => TokenizerJsonFileName,
        TokenizerKind.SentencePiece => SentencePieceFileName,
        _ => $"{VocabFileName} and {MergesFileName}",
    };

    /// <summary>Loads the tokenizer of a model folder, with its family's conventions.</summary>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing (names the file).</exception>
    /// <exception cref="InvalidDataException">A file cannot be parsed (names the file).</exception>
    public static BpeTokenizer Load(string folder, TokenizerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        bool prependBos = AddBosToken(folder) ?? spec.PrependBos;
        if (spec.Kind == TokenizerKind.TokenizerJson)
            return new BpeTokenizer(TokenizerJson.Load(Path.Combine(folder, TokenizerJsonFileName)), spec, prependBos);
        if (spec.Kind == TokenizerKind.SentencePiece)
            return new BpeTokenizer(LoadSentencePiece(Path.Combine(folder, SentencePieceFileName)), spec, prependBos);
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
        return new BpeTokenizer(bpe, spec, prependBos);
    }

    private static Tokenizer LoadSentencePiece(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        try
        {
            using var model = File.OpenRead(path);
            return LlamaTokenizer.Create(model, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception ex) when (ex is not IOException)
        {
            throw new InvalidDataException($"Cannot read the SentencePiece tokenizer {path}: {ex.Message}", ex);
        }
    }

    // tokenizer_config.json's add_bos_token, when the folder has it.
    private static bool? AddBosToken(string folder)
    {
        string path = Path.Combine(folder, "tokenizer_config.json");
        if (!File.Exists(path)) return null;
        try
        {
            using var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
            return config.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object
                && config.RootElement.TryGetProperty("add_bos_token", out var add)
                && add.ValueKind is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False
                ? add.GetBoolean()
                : null;
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({ex.Message})", ex);
        }
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
        var ids = EncodeText(text);
        var result = new List<int>(ids.Count + 1);
        if (_prependBos) result.Add(BosTokenId);
        result.AddRange(ids);
        return result;
    }

    /// <summary>Token ids of a text, without BOS.</summary>
    public IReadOnlyList<int> EncodeText(string text) => _bpe switch
    {
        CodeGenTokenizer codeGen => codeGen.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false),
        SentencePieceTokenizer sentencePiece => sentencePiece.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false),
        _ => _bpe.EncodeToIds(text),
    };

    /// <summary>Text of generated ids, special ids (pad, BOS, EOS) left out.</summary>
    public string Decode(IEnumerable<long> ids) =>
        _bpe.Decode(ids.Select(i => (int)i).Where(i => !_specialIds.Contains(i))) ?? string.Empty;
}
