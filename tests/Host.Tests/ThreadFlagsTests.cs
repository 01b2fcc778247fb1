namespace FlexGen.Host.Tests;

using System.CommandLine;
using FlexGen.Host.Cli;
using FlexGen.Host.Hosting;
using FlexGen.Tensors;

/// <summary>--compute-threads and --io-threads (FlexGen:ComputeThreads, FlexGen:IoThreads): parsed, checked, carried into the engine.</summary>
public class ThreadFlagsTests
{
    private static FlexGenOptions OptionsOf(params string[] args)
    {
        var flags = new GenerationFlags(defaultGenLen: 4, defaultTrace: null);
        var command = new Command("generate");
        flags.AddTo(command);
        return flags.ToOptions(command.Parse(args));
    }

    [Fact]
    public void The_thread_flags_should_set_the_options_and_be_unset_when_absent()
    {
        var given = OptionsOf("--compute-threads", "3", "--io-threads", "2");
        var absent = OptionsOf();

        Assert.Equal((3, 2), (given.ComputeThreads, given.IoThreads));
        Assert.Equal((null, null), (absent.ComputeThreads, absent.IoThreads));
    }

    [Fact]
    public void Generate_bench_and_serve_should_have_the_thread_flags()
    {
        var root = FlexGenCli.BuildRoot();
        foreach (string command in new[] { "generate", "bench", "serve" })
        {
            var flags = root.Subcommands.Single(c => c.Name == command).Options.Select(o => o.Name).ToHashSet();
            Assert.Contains("--compute-threads", flags);
            Assert.Contains("--io-threads", flags);
        }
    }

    [Fact]
    public void FlexGenSetup_should_carry_the_threads_into_the_engine_settings()
    {
        var given = FlexGenSetup.Create(new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "float32", ComputeThreads = 3, IoThreads = 2 });
        var absent = FlexGenSetup.Create(new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "float32" });

        Assert.Equal(3, given.Settings.ComputeThreads);
        Assert.Equal(2, given.Settings.Tiers.Disk.IoThreads);
        Assert.True(given.Settings.Tiers.Disk.DirectIo);
        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(streamsFromDisk: false), absent.Settings.ComputeThreads);
        Assert.False(absent.LeavesCoreToDisk);
        Assert.Equal(4, absent.Settings.Tiers.Disk.IoThreads);
    }

    [Fact]
    public void FlexGenSetup_should_leave_a_core_to_the_disk_tier_when_its_policy_streams_from_disk_and_no_count_is_given()
    {
        FlexGenSetup SetupOf(int? threads, params double[] percent) => FlexGenSetup.Create(new FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32", ComputeThreads = threads, Policy = new PolicyOptions { Percent = percent },
        });

        var cacheOnDisk = SetupOf(null, 100, 0, 0, 0, 100, 0);
        var givenOnDisk = SetupOf(2, 0, 0, 100, 0, 100, 0);
        var resident = SetupOf(null, 100, 0, 100, 0, 100, 0);

        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(streamsFromDisk: true), cacheOnDisk.Settings.ComputeThreads);
        Assert.Equal(cacheOnDisk.Settings.ComputeThreads < resident.Settings.ComputeThreads, cacheOnDisk.LeavesCoreToDisk);
        Assert.Equal(2, givenOnDisk.Settings.ComputeThreads);
        Assert.False(givenOnDisk.LeavesCoreToDisk);
        Assert.False(resident.LeavesCoreToDisk);
    }

    [Theory]
    [InlineData(0, null, "FlexGen:ComputeThreads 0")]
    [InlineData(1025, null, "FlexGen:ComputeThreads 1025")]
    [InlineData(null, 0, "FlexGen:IoThreads 0")]
    public void ResolveThreads_should_refuse_a_count_outside_1_to_1024_naming_its_key(int? compute, int? io, string named)
    {
        var ex = Assert.Throws<FlexGenOptionsException>(() => new FlexGenOptions { ComputeThreads = compute, IoThreads = io }.ResolveThreads());

        Assert.Equal($"{named}: must be a thread count in 1..1024.", ex.Message);
    }
}

/// <summary>A run sets libtorch's process-wide threads: alone, not beside other classes, and put back afterwards.</summary>
[Collection(ComputeThreadsCollection.Name)]
public class ComputeThreadsRunTests
{
    [Fact]
    public async Task Generate_should_run_on_the_given_threads_and_print_them_in_its_header()
    {
        int before = TorchRuntime.ComputeThreads;
        int wanted = before == 1 ? 2 : 1;
        try
        {
            var result = await CliRunner.RunAsync("generate", "--compute-threads", $"{wanted}", "--io-threads", "3", "--gen-len", "2", "--trace", "");

            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains($", {wanted} compute thread(s), 3 disk I/O thread(s)", result.Output);
            Assert.Equal(wanted, TorchRuntime.ComputeThreads);
        }
        finally
        {
            TorchRuntime.SetComputeThreads(before);
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ComputeThreadsCollection
{
    public const string Name = "libtorch compute threads";
}
