namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;

public class HugePageMallocTests
{
    private const string Madvise = "always [madvise] never\n";

    [Theory]
    [InlineData("2.36", Madvise, null, null, true)]
    [InlineData("2.35", Madvise, "glibc.malloc.arena_max=2", null, true)] // other tunables kept
    [InlineData("2.34", Madvise, null, null, false)] // glibc without the tunable
    [InlineData(null, Madvise, null, null, false)] // not glibc
    [InlineData("2.36", "[always] madvise never\n", null, null, false)] // the kernel backs large allocations already
    [InlineData("2.36", "always madvise [never]\n", null, null, false)] // no huge pages to ask for
    [InlineData("2.36", null, null, null, false)] // no transparent huge pages in this kernel
    [InlineData("2.36", Madvise, "glibc.malloc.hugetlb=1", null, false)] // already set: no second restart
    [InlineData("2.36", Madvise, "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0", null, false)] // the user's choice stands
    [InlineData("2.36", Madvise, null, "0", false)] // turned off
    [InlineData("2.36", Madvise, null, "off", false)]
    [InlineData("2.36", Madvise, null, "1", true)]
    public void ShouldEnable_should_hold_only_on_glibc_with_huge_pages_on_request_and_the_tunable_not_yet_set(
        string? glibc, string? transparentHugePages, string? glibcTunables, string? optOut, bool expected)
    {
        var version = glibc is null ? null : Version.Parse(glibc);
        Assert.Equal(expected, HugePageMalloc.ShouldEnable(version, transparentHugePages, glibcTunables, optOut));
    }

    [Fact]
    public void WithTunable_should_add_the_tunable_and_keep_the_others()
    {
        Assert.Equal("glibc.malloc.hugetlb=1", HugePageMalloc.WithTunable(null));
        Assert.Equal("glibc.malloc.hugetlb=1", HugePageMalloc.WithTunable(""));
        Assert.Equal("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", HugePageMalloc.WithTunable("glibc.malloc.arena_max=2"));
    }

    [Fact]
    public void SelectedMode_should_read_the_bracketed_word_of_the_kernel_file()
    {
        Assert.Equal("madvise", HugePageMalloc.SelectedMode(Madvise));
        Assert.Equal("never", HugePageMalloc.SelectedMode("always madvise [never]"));
        Assert.Null(HugePageMalloc.SelectedMode("garbled"));
        Assert.Null(HugePageMalloc.SelectedMode(null));
    }
}
