namespace FlexGen.Host.Tests;

using System.CommandLine;
using FlexGen.Host.Cli;
using FlexGen.Host.Hosting;
using FlexGen.Tensors;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;
using static TorchSharp.torch;

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
        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk: false), absent.Settings.ComputeThreads);
        Assert.False(absent.LeavesCoreToDisk);
        Assert.Equal(4, absent.Settings.Tiers.Disk.IoThreads);
    }

    [Fact]
    public void FlexGenSetup_should_leave_a_core_to_the_disk_tier_only_where_the_decode_stays_disk_bound_without_it()
    {
        // The seeded profile (TestHardwareCache): disk 1.3 GB/s, decode matmuls 80 GFLOP/s.
        FlexGenSetup SetupOf(int? threads, int gpuBatchSize, int numGpuBatches, params double[] percent) => FlexGenSetup.Create(new FlexGenOptions
        {
            Model = "opt-1.3b", Path = "_DUMMY_", ComputeDtype = "float32", ComputeThreads = threads,
            Policy = new PolicyOptions { Percent = percent, GpuBatchSize = gpuBatchSize, NumGpuBatches = numGpuBatches, PlanPromptLen = 16, PlanGenLen = 8 },
        });

        var diskBound = SetupOf(null, 1, 1, 0, 0, 100, 0, 100, 0); // 2.6 GB read per token of 1 sequence
        var computeBound = SetupOf(null, 64, 8, 0, 0, 100, 0, 100, 0); // the same bytes for 512 sequences
        var given = SetupOf(2, 1, 1, 0, 0, 100, 0, 100, 0);
        var resident = SetupOf(null, 1, 1, 100, 0, 100, 0, 100, 0);
        var cores = Environment.ProcessorCount;

        Assert.True(Prediction(diskBound).DecodeGainsFromACoreLeftToTheDisk(Math.Max(cores, 2)));
        Assert.False(Prediction(computeBound).DecodeGainsFromACoreLeftToTheDisk(Math.Max(cores, 2)));
        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk: true), diskBound.Settings.ComputeThreads);
        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk: false), computeBound.Settings.ComputeThreads);
        Assert.Equal(diskBound.Settings.ComputeThreads < resident.Settings.ComputeThreads, diskBound.LeavesCoreToDisk);
        Assert.False(computeBound.LeavesCoreToDisk);
        Assert.Equal(2, given.Settings.ComputeThreads);
        Assert.False(given.LeavesCoreToDisk);
        Assert.False(resident.LeavesCoreToDisk);
    }

    [Fact]
    public void LeaveCoreToDisk_should_leave_one_for_a_disk_policy_when_no_profile_is_at_hand()
    {
        var config = ModelResolver.Resolve("opt-1.3b", "_DUMMY_").Config;
        var budgets = FlexGenSetup.ResolveBudgets(new FlexGenOptions(), Path.GetTempPath());
        var plan = new PolicyOptions();

        Assert.True(FlexGenSetup.LeaveCoreToDisk(config, Policy.FromPercent([0, 0, 100, 0, 100, 0], 64, 8), plan, budgets, null, ScalarType.Float32, 1));
        Assert.False(FlexGenSetup.LeaveCoreToDisk(config, Policy.FromPercent([100, 0, 100, 0, 100, 0], 1, 1), plan, budgets, null, ScalarType.Float32, 1));
    }

    [Fact]
    public void FlexGenSetup_should_read_the_hardware_profile_at_start_up_only_for_a_policy_that_streams_from_disk()
    {
        using var folder = new TempFolder();
        string unreadable = folder.File("hw.json");
        File.WriteAllText(unreadable, "{ not a profile");
        FlexGenSetup SetupOf(params double[] percent) => FlexGenSetup.Create(new FlexGenOptions
        {
            Model = "opt-1.3b", Path = "_DUMMY_", ComputeDtype = "float32", Hardware = unreadable,
            Policy = new PolicyOptions { Percent = percent, GpuBatchSize = 1, NumGpuBatches = 1 },
        });

        var resident = SetupOf(100, 0, 100, 0, 100, 0); // the profile is not needed to start it
        var ex = Assert.Throws<FlexGenOptionsException>(() => SetupOf(0, 0, 100, 0, 100, 0));

        Assert.False(resident.LeavesCoreToDisk);
        Assert.Equal(FlexGenOptionKeys.Hardware, ex.Key);
    }

    [Fact]
    public void A_core_left_to_the_disk_should_be_weighed_against_the_disk_reads_the_compute_slows()
    {
        // Decode bounds in token/s as the 2-core VM's profile gave them for OPT-1.3B float32 from disk.
        var setup = FlexGenSetup.Create(new FlexGenOptions
        {
            Model = "opt-1.3b", Path = "_DUMMY_", ComputeDtype = "float32",
            Policy = new PolicyOptions { Percent = [0, 0, 100, 0, 100, 0], GpuBatchSize = 4, NumGpuBatches = 1, PlanPromptLen = 16, PlanGenLen = 8 },
        });
        RunPrediction With(double compute, double beside, double disk) => Prediction(setup) with
        {
            Bounds =
            [
                new("decode", "compute", 1 / compute, compute),
                new("decode", "cpu->gpu + " + CostTerms.ComputeBesideDiskReads, 1 / beside, beside),
                new("decode", "disk->cpu", 1 / disk, disk),
                new("prefill", "disk->cpu", 1, 1), // another phase's bound decides nothing
            ],
        };

        var oneCoreJustShort = With(compute: 22.9, beside: 13.3, disk: 11.5); // 4 x 1: one core computes 11.45
        Assert.False(oneCoreJustShort.DecodeGainsFromACoreLeftToTheDisk(2)); // the disk unslowed: 11.45 < min(13.3, 11.5)
        Assert.True(oneCoreJustShort.DecodeGainsFromACoreLeftToTheDisk(2, diskShareWhileComputing: 0.73)); // >= min(13.3, 8.4)
        Assert.True(With(8.7, 4.2, 2.9).DecodeGainsFromACoreLeftToTheDisk(2)); // 1 x 1: disk-bound either way
        Assert.False(With(92.9, 78.6, 183.8).DecodeGainsFromACoreLeftToTheDisk(2, 0.73)); // 32 x 2: compute-bound
        Assert.False(oneCoreJustShort.DecodeGainsFromACoreLeftToTheDisk(1, 0.5)); // no core to spare
    }

    private static RunPrediction Prediction(FlexGenSetup setup) =>
        PolicyCost.Predict(setup.Model.Config, setup.Policy, 16, 8, TestHardwareCache.Profile, setup.Budgets.GpuInCpuMemory, 4, setup.Pipeline.PrefetchSteps);

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
            // The header only: libtorch's count is per thread once a thread has run a parallel op (the backend sets it on
            // the thread that loads; Actors.Tests' ComputeThreadsTests checks that), so this thread's need not follow.
            Assert.Contains($", {wanted} compute thread(s), 3 disk I/O thread(s)", result.Output);
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
