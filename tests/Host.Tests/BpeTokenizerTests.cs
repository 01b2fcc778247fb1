namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Families.Opt;
using System.Text.Json;
using FlexGen.Host.Text;
using FlexGen.Tensors.Models;

public class BpeTokenizerTests
{
    /// <summary>The OPT family's tokenizer conventions (BOS 2 prepended; pad 1, BOS, EOS 2 special).</summary>
    private static TokenizerSpec Spec => OptFamily.Instance.Tokenizer(OptConfig.FromPreset("opt-125m"));

    /// <summary>A GPT-2 style byte-level BPE vocabulary in OPT's id layout (specials 0..3), "Ġ" standing for a space.</summary>
    internal static void WriteTinyVocabulary(string folder)
    {
        var vocab = new Dictionary<string, int>
        {
            ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3,
            ["H"] = 4, ["e"] = 5, ["l"] = 6, ["o"] = 7, ["Ġ"] = 8, ["w"] = 9, ["r"] = 10, ["d"] = 11,
            ["He"] = 12, ["ll"] = 13, ["Hell"] = 14, ["Hello"] = 15, ["Ġw"] = 16, ["or"] = 17, ["Ġwor"] = 18, ["ld"] = 19,
            ["Ġworld"] = 20,
        };
        File.WriteAllText(Path.Combine(folder, BpeTokenizer.VocabFileName), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(folder, BpeTokenizer.MergesFileName),
            "#version: 0.2\nH e\nl l\nHe ll\nHell o\nĠ w\no r\nĠw or\nl d\nĠwor ld\n");
    }

    [Fact]
    public void Encode_should_prepend_BOS_and_apply_the_merges()
    {
        using var folder = new TempFolder();
        WriteTinyVocabulary(folder.Path);
        var tokenizer = BpeTokenizer.Load(folder.Path, Spec);
        Assert.Equal([2, 15, 20], tokenizer.Encode("Hello world"));
        Assert.Equal([2, 12, 6], tokenizer.Encode("Hel"));
    }

    [Fact]
    public void Decode_should_drop_pad_BOS_and_EOS()
    {
        using var folder = new TempFolder();
        WriteTinyVocabulary(folder.Path);
        var tokenizer = BpeTokenizer.Load(folder.Path, Spec);
        Assert.Equal("Hello world", tokenizer.Decode([2, 15, 1, 20, 2]));
    }

    [Fact]
    public void Load_should_name_the_missing_file()
    {
        using var folder = new TempFolder();
        File.WriteAllText(Path.Combine(folder.Path, BpeTokenizer.VocabFileName), "{}");
        Assert.False(BpeTokenizer.IsPresent(folder.Path));
        var ex = Assert.Throws<FileNotFoundException>(() => BpeTokenizer.Load(folder.Path, Spec));
        Assert.Contains(BpeTokenizer.MergesFileName, ex.Message);
    }
}
