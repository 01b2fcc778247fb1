using System.Text;
using System.Text.RegularExpressions;

namespace FlexGen.Tensors.Tests.Models;

/// <summary>Test-side reading of a .npy header's text only (the library's reader belongs to FlexGen.Tensors.Npy).</summary>
internal static class NpyHeaderText
{
    public static (string Descr, long[] Shape) Read(string path)
    {
        var head = new byte[256];
        using (var f = File.OpenRead(path)) f.ReadExactly(head, 0, (int)Math.Min(head.Length, f.Length));
        var text = Encoding.ASCII.GetString(head);
        var descr = Regex.Match(text, @"'descr':\s*'([^']+)'").Groups[1].Value;
        var dims = Regex.Match(text, @"'shape':\s*\(([^)]*)\)").Groups[1].Value;
        var shape = dims.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(long.Parse).ToArray();
        return (descr, shape);
    }
}
