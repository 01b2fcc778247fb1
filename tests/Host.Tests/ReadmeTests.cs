namespace FlexGen.Host.Tests;

using System.Text.RegularExpressions;
using FlexGen.Host.Cli;

/// <summary>The README shows only commands and flags that exist.</summary>
public class ReadmeTests
{
    private static string ReadmeText()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string path = Path.Combine(dir.FullName, "README.md");
            if (File.Exists(path) && File.Exists(Path.Combine(dir.FullName, "FlexGen.Actors.sln"))) return File.ReadAllText(path);
        }
        throw new FileNotFoundException("README.md next to FlexGen.Actors.sln above " + AppContext.BaseDirectory);
    }

    /// <summary>The flexgen command lines of the README (continuation lines joined), as argument lists.</summary>
    private static List<string[]> CommandLines()
    {
        string text = ReadmeText().Replace("\\\n", " ");
        var lines = new List<string[]>();
        foreach (Match m in Regex.Matches(text, @"(?:dotnet run (?:-c Release )?--project src/Host --|/tmp/flexgen/flexgen) ([^\n`]*)"))
            lines.Add(Regex.Matches(m.Groups[1].Value, "\"[^\"]*\"|\\S+").Select(t => t.Value.Trim('"')).ToArray());
        return lines;
    }

    [Fact]
    public void Every_command_line_in_the_README_should_parse()
    {
        var lines = CommandLines();
        Assert.True(lines.Count >= 8, $"found only {lines.Count} command lines");
        foreach (var args in lines.Where(a => a[0] != "<command>"))
        {
            var parse = FlexGenCli.BuildRoot().Parse(args);
            Assert.True(parse.Errors.Count == 0, $"{string.Join(' ', args)}: {string.Join("; ", parse.Errors.Select(e => e.Message))}");
        }
    }

    [Fact]
    public void Every_flag_in_the_README_should_exist_on_some_command()
    {
        var root = FlexGenCli.BuildRoot();
        var known = root.Subcommands.SelectMany(c => c.Options).Concat(root.Options).SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
        var flags = Regex.Matches(ReadmeText(), @"`(--[a-z][a-z-]+)").Select(m => m.Groups[1].Value).Distinct().ToList();
        Assert.NotEmpty(flags);
        Assert.All(flags, flag => Assert.Contains(flag, known));
    }
}
