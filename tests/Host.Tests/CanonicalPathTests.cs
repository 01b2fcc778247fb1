namespace FlexGen.Host.Tests;

using FlexGen.Host.Checkpoints;

public class CanonicalPathTests
{
    [Theory]
    [InlineData("d/")]
    [InlineData("d/.")]
    [InlineData("d/sub/..")]
    [InlineData("./d//")]
    [InlineData("link")]
    [InlineData("link/")]
    [InlineData("link/sub/..")]
    [InlineData("chain")]
    public void Of_should_give_the_folder_itself_for_every_spelling_of_it(string spelling)
    {
        using var folder = new TempFolder();
        string real = folder.File("d");
        Directory.CreateDirectory(Path.Combine(real, "sub"));
        Directory.CreateSymbolicLink(folder.File("link"), "d");
        Directory.CreateSymbolicLink(folder.File("chain"), folder.File("link"));

        Assert.Equal(CanonicalPath.Of(real), CanonicalPath.Of(Path.Combine(folder.Path, spelling)));
    }

    [Fact]
    public void Of_should_apply_dot_dot_after_the_link_before_it_is_resolved()
    {
        using var folder = new TempFolder();
        Directory.CreateDirectory(folder.File("a/b"));
        Directory.CreateSymbolicLink(folder.File("up"), "a/b");

        // up/.. is a (the parent of the link's target), not the folder holding the link.
        Assert.Equal(CanonicalPath.Of(folder.File("a")), CanonicalPath.Of(folder.File("up/..")));
    }

    [Fact]
    public void Of_should_keep_a_missing_tail_below_the_resolved_part()
    {
        using var folder = new TempFolder();
        Directory.CreateDirectory(folder.File("d"));
        Directory.CreateSymbolicLink(folder.File("link"), "d");

        Assert.Equal(Path.Combine(CanonicalPath.Of(folder.File("d")), "new", "out"), CanonicalPath.Of(folder.File("link/new/out/")));
    }

    [Fact]
    public void Of_should_refuse_a_link_loop()
    {
        using var folder = new TempFolder();
        File.CreateSymbolicLink(folder.File("a"), "b");
        File.CreateSymbolicLink(folder.File("b"), "a");

        var ex = Assert.Throws<IOException>(() => CanonicalPath.Of(folder.File("a/x")));
        Assert.Contains("symbolic links", ex.Message);
    }

    [Theory]
    [InlineData("/m/d", "/m/d", true)]
    [InlineData("/m/d/out", "/m/d", true)]
    [InlineData("/m/dx", "/m/d", false)]
    [InlineData("/m", "/m/d", false)]
    [InlineData("/m/d", "/", true)]
    public void IsSameOrInside_should_compare_whole_components(string path, string folder, bool expected)
    {
        Assert.Equal(expected, CanonicalPath.IsSameOrInside(path, folder));
    }
}
