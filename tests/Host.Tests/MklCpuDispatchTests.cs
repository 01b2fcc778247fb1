namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;

public class MklCpuDispatchTests
{
    private const string Library = "/opt/flexgen/native/" + MklCpuDispatch.LibraryName;

    [Theory]
    [InlineData("AuthenticAMD", null, null, true, true)]
    [InlineData("AuthenticAMD", "/usr/lib/libjemalloc.so", null, true, true)]
    [InlineData("GenuineIntel", null, null, true, false)] // MKL already takes its Intel paths
    [InlineData(null, null, null, true, false)] // vendor unknown
    [InlineData("AuthenticAMD", null, null, false, false)] // library missing
    [InlineData("AuthenticAMD", Library, null, true, false)] // already preloaded: no second restart
    [InlineData("AuthenticAMD", "/x/libjemalloc.so:" + Library, null, true, false)]
    [InlineData("AuthenticAMD", null, "0", true, false)] // turned off
    [InlineData("AuthenticAMD", null, "false", true, false)]
    [InlineData("AuthenticAMD", null, "1", true, true)]
    public void ShouldPreload_should_hold_only_on_amd_with_the_library_not_yet_preloaded_and_not_turned_off(
        string? vendor, string? ldPreload, string? optOut, bool libraryExists, bool expected)
    {
        Assert.Equal(expected, MklCpuDispatch.ShouldPreload(vendor, ldPreload, optOut, libraryExists));
    }

    [Fact]
    public void WithLibrary_should_put_the_library_first_and_keep_what_was_preloaded()
    {
        Assert.Equal(Library, MklCpuDispatch.WithLibrary(null, Library));
        Assert.Equal(Library, MklCpuDispatch.WithLibrary(" ", Library));
        Assert.Equal($"{Library}:/x/a.so", MklCpuDispatch.WithLibrary("/x/a.so", Library));
    }
}
