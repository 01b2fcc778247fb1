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

    [Fact]
    public async Task Flexgen_should_restart_itself_with_mkl_intel_paths_on_amd_keeping_arguments_and_results()
    {
        bool amd = File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("vendor_id", StringComparison.Ordinal) && l.Contains("AuthenticAMD", StringComparison.Ordinal));
        using var folder = new TempFolder();
        string on = folder.File("on.npy"), off = folder.File("off.npy");

        // Each writes its own trace (both would write flexgen.trace.json in the working folder).
        using (var preloaded = FlexGenProcess.Start("generate", "--output-ids", on, "--trace", folder.File("on.trace.json")))
        using (var plain = FlexGenProcess.StartWith(new Dictionary<string, string> { [MklCpuDispatch.OptOutVariable] = "0" },
                   "generate", "--output-ids", off, "--trace", folder.File("off.trace.json")))
        {
            Assert.True(await preloaded.WaitForExit(TimeSpan.FromMinutes(2)) == 0, preloaded.ToString());
            Assert.True(await plain.WaitForExit(TimeSpan.FromMinutes(2)) == 0, plain.ToString());
            string marker = $"MKL with its Intel code paths ({MklCpuDispatch.LibraryName} preloaded)";
            Assert.Equal(amd, preloaded.Output.Contains(marker, StringComparison.Ordinal));
            Assert.DoesNotContain(marker, plain.Output, StringComparison.Ordinal);
        }

        // The restarted process got every argument (it wrote its ids where asked) and computes the same tokens.
        Assert.Equal(File.ReadAllBytes(off), File.ReadAllBytes(on));
    }
}
