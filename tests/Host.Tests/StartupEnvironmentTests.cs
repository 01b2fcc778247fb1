namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;

public class StartupEnvironmentTests
{
    [Fact]
    public async Task Flexgen_should_restart_itself_once_with_what_is_due_here_keeping_arguments_and_results()
    {
        bool amd = File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("vendor_id", StringComparison.Ordinal) && l.Contains("AuthenticAMD", StringComparison.Ordinal));
        // This test process's own environment decides the huge pages as it decides them for the child it starts.
        bool hugePages = HugePageMalloc.ShouldEnable(HugePageMalloc.GlibcVersion(), HugePageMalloc.KernelMode(),
            Environment.GetEnvironmentVariable(HugePageMalloc.TunablesVariable), Environment.GetEnvironmentVariable(HugePageMalloc.OptOutVariable));
        bool spin = OpenMpSpin.ShouldSet(OperatingSystem.IsLinux(), Environment.GetEnvironmentVariable(OpenMpSpin.SpinCountVariable),
            Environment.GetEnvironmentVariable(OpenMpSpin.WaitPolicyVariable), Environment.GetEnvironmentVariable(OpenMpSpin.OptOutVariable));
        using var folder = new TempFolder();
        string on = folder.File("on.npy"), off = folder.File("off.npy");

        // Each writes its own trace (both would write flexgen.trace.json in the working folder).
        using (var restarted = FlexGenProcess.Start("generate", "--output-ids", on, "--trace", folder.File("on.trace.json")))
        using (var plain = FlexGenProcess.StartWith(
                   new Dictionary<string, string>
                   {
                       [MklCpuDispatch.OptOutVariable] = "0", [HugePageMalloc.OptOutVariable] = "0", [OpenMpSpin.OptOutVariable] = "0",
                   },
                   "generate", "--output-ids", off, "--trace", folder.File("off.trace.json")))
        {
            Assert.True(await restarted.WaitForExit(TimeSpan.FromMinutes(2)) == 0, restarted.ToString());
            Assert.True(await plain.WaitForExit(TimeSpan.FromMinutes(2)) == 0, plain.ToString());
            string mkl = $"MKL with its Intel code paths ({MklCpuDispatch.LibraryName} preloaded)";
            string huge = $"malloc on transparent huge pages ({HugePageMalloc.Tunable})";
            Assert.Equal(amd, restarted.Output.Contains(mkl, StringComparison.Ordinal));
            string spinning = $"OpenMP workers spin {OpenMpSpin.SpinCount} before they sleep ({OpenMpSpin.SpinCountVariable})";
            Assert.Equal(hugePages, restarted.Output.Contains(huge, StringComparison.Ordinal));
            Assert.Equal(spin, restarted.Output.Contains(spinning, StringComparison.Ordinal));
            Assert.DoesNotContain(mkl, plain.Output, StringComparison.Ordinal);
            Assert.DoesNotContain(huge, plain.Output, StringComparison.Ordinal);
            Assert.DoesNotContain(spinning, plain.Output, StringComparison.Ordinal);
        }

        // The restarted process got every argument (it wrote its ids where asked) and computes the same tokens.
        Assert.Equal(File.ReadAllBytes(off), File.ReadAllBytes(on));
    }
}
