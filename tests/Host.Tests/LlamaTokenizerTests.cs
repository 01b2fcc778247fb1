namespace FlexGen.Host.Tests;

using System.Text.Json;
using FlexGen.Host.Text;
using FlexGen.Tensors.Families.Llama;
using FlexGen.Tensors.Models;

/// <summary>The Llama family's tokenizers: tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece), by the family's spec.</summary>
public class LlamaTokenizerTests
{
    private static readonly TokenizerSpec JsonSpec = new(TokenizerKind.TokenizerJson, 13, PrependBos: true, [13, 14]);

    // Llama 3's split pattern, then byte-level.
    private static void WriteTokenizerJson(string folder)
    {
        var json = new
        {
            added_tokens = new[] { new { id = 13, content = "<s>" }, new { id = 14, content = "</s>" } },
            pre_tokenizer = new
            {
                type = "Sequence",
                pretokenizers = new object[]
                {
                    new { type = "Split", pattern = new { Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" }, behavior = "Isolated" },
                    new { type = "ByteLevel" },
                },
            },
            model = new
            {
                type = "BPE",
                vocab = new Dictionary<string, int>
                {
                    ["h"] = 0, ["e"] = 1, ["l"] = 2, ["o"] = 3, ["Ġ"] = 4, ["w"] = 5, ["r"] = 6, ["d"] = 7,
                    ["he"] = 8, ["ll"] = 9, ["hell"] = 10, ["hello"] = 11, ["Ġw"] = 12,
                },
                merges = new[] { "h e", "l l", "he ll", "hell o", "Ġ w" },
            },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), JsonSerializer.Serialize(json));
    }

    [Fact]
    public void Tokenizer_json_should_encode_with_bos_and_decode_without_specials()
    {
        using var folder = new TempFolder();
        WriteTokenizerJson(folder.Path);

        Assert.True(BpeTokenizer.IsPresent(folder.Path, JsonSpec));
        var tokenizer = BpeTokenizer.Load(folder.Path, JsonSpec);

        Assert.Equal([13, 11, 12, 3, 6, 2, 7], tokenizer.Encode("hello world"));
        Assert.Equal([11], tokenizer.EncodeText("hello"));
        Assert.Equal("hello world", tokenizer.Decode([13, 11, 12, 3, 6, 2, 7, 14]));
    }

    [Fact]
    public void Tokenizer_config_add_bos_token_should_decide_the_bos()
    {
        using var folder = new TempFolder();
        WriteTokenizerJson(folder.Path);
        File.WriteAllText(folder.File("tokenizer_config.json"), """{ "add_bos_token": false }""");

        Assert.Equal([11], BpeTokenizer.Load(folder.Path, JsonSpec).Encode("hello"));
    }

    [Fact]
    public void Family_should_choose_the_tokenizer_kind_and_bos_by_model()
    {
        Assert.Equal((TokenizerKind.TokenizerJson, true, 128000), Of("llama-3.1-8b"));
        Assert.Equal((TokenizerKind.SentencePiece, true, 1), Of("llama-2-7b"));
        Assert.Equal((TokenizerKind.SentencePiece, true, 1), Of("mistral-7b"));
        Assert.Equal((TokenizerKind.TokenizerJson, false, 151643), Of("qwen2.5-7b"));
        Assert.True(LlamaFamily.Instance.Tokenizer(ModelFamilies.FromPreset("llama-3.1-8b")).StopAtEos);
        Assert.False(ModelFamilies.FromPreset("opt-125m") is var opt && opt.Family.Tokenizer(opt).StopAtEos);

        static (TokenizerKind, bool, int) Of(string preset)
        {
            var config = ModelFamilies.FromPreset(preset);
            var spec = config.Family.Tokenizer(config);
            return (spec.Kind, spec.PrependBos, spec.BosTokenId);
        }
    }

    [Fact]
    public void SentencePiece_should_name_its_missing_file()
    {
        using var folder = new TempFolder();
        var spec = LlamaFamily.Instance.Tokenizer(ModelFamilies.FromPreset("llama-2-7b"));

        Assert.False(BpeTokenizer.IsPresent(folder.Path, spec));
        var ex = Assert.Throws<FileNotFoundException>(() => BpeTokenizer.Load(folder.Path, spec));
        Assert.Contains("tokenizer.model", ex.Message);
    }
}
