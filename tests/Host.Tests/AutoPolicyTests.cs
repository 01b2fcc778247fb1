namespace FlexGen.Host.Tests;

using System.Globalization;
using System.Text.RegularExpressions;
using FlexGen.Actors.Benchmark;
using FlexGen.Host.Cli;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;
using static TorchSharp.torch;

/// <summary>bench's bounds, the hardware profile cache, and --policy auto (CLI and hosting option).</summary>
public class AutoPolicyTests
{
    private static string[] Bench(params string[] more) =>
        ["bench", "--model", TestPaths.BundledModel, "--prompt-len", "8", "--gen-len", "4", "--gpu-batch-size", "2", "--no-log", "--warmup", "false", "--compute-dtype", "float32", .. more];

    [Fact]
    public async Task Bench_should_print_each_bound_from_the_planners_terms_with_the_prediction_and_efficiency()
    {
        using var folder = new TempFolder();
        string hardware = TestHardwareCache.WriteFile(folder);

        var result = await CliRunner.RunAsync(Bench("--percent", "0", "100", "100", "0", "100", "0", "--hardware", hardware, "--offload-dir", folder.Path));

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"bounds (the cost model at this policy and block; hardware {hardware}):", result.Output);
        var config = ModelFamilies.FromNameOrPath(TestPaths.BundledModel);
        var policy = Policy.FromPercent([0, 100, 100, 0, 100, 0], 2, 1);
        // bench's default dtype: float32 on the CPU (which widens the float16 weights in its compute), float16 with CUDA.
        bool onCpu = !FlexGen.Tensors.TorchRuntime.CudaAvailable;
        var expected = PolicyCost.Predict(config, policy, 8, 4, TestHardwareCache.Profile, computesOnCpu: onCpu, computeDtypeBytes: onCpu ? 4 : 2);
        foreach (var phase in new[] { "prefill", "decode" })
        {
            var line = Regex.Match(result.Output, $@"  {phase}: +bound (.*) token/s; predicted ([\d.]+), measured ([\d.]+) token/s; efficiency ([\d.]+) \(measured / (\S+) bound\)");
            Assert.True(line.Success, result.Output);
            // Weights on the CPU: with CUDA the cpu->gpu link bounds too; on the CPU the compute widens them (no link);
            // nothing touches the disk.
            string Bound(string name) => expected.Bounds.Single(b => b.Phase == phase && b.Name == name).TokensPerSecond.ToString("F1", CultureInfo.InvariantCulture);
            Assert.Contains($"compute {Bound("compute")}", line.Groups[1].Value);
            Assert.Contains(onCpu ? "cpu->gpu -" : $"cpu->gpu {Bound("cpu->gpu")}", line.Groups[1].Value);
            Assert.Contains("disk->cpu -", line.Groups[1].Value);
            var tightest = expected.Tightest(phase);
            Assert.Equal(tightest.Name, line.Groups[5].Value);
            double measured = double.Parse(line.Groups[3].Value, CultureInfo.InvariantCulture);
            // The measured throughput is printed to 0.1 token/s and the efficiency to 0.001: recomputed from the printed
            // value, the efficiency agrees within what those roundings allow.
            double tolerance = 0.05 / tightest.TokensPerSecond + 0.0005 + 1e-9;
            double efficiency = double.Parse(line.Groups[4].Value, CultureInfo.InvariantCulture);
            Assert.InRange(efficiency, measured / tightest.TokensPerSecond - tolerance, measured / tightest.TokensPerSecond + tolerance);
        }
    }

    [Fact]
    public void Bench_efficiency_at_a_grouped_block_should_be_near_one_where_the_compute_bounds_it()
    {
        // A CPU-like profile: the matmul rate climbs with the rows (each matmul reads its weight), and a task costs time.
        var profile = TestHardwareCache.Profile with { MmFlopsByRows = [(8, 10e9), (32, 30e9), (512, 40e9)], TaskSeconds = 1e-4 };
        var config = ModelFamilies.FromPreset("opt-125m");
        var grouped = Policy.FromPercent([.. Policy.AllGpuPercent], 8, 4);
        // A 32 x 1 block runs the matmuls a grouped 8 x 4 block runs, over as many rows, with as many tasks per layer:
        // its compute bound is what a grouped run reaches where the compute bounds it.
        double reached = PolicyCost.Predict(config, Policy.FromPercent([.. Policy.AllGpuPercent], 32, 1), 64, 16, profile, computesOnCpu: true, computeDtypeBytes: 4)
            .Tightest("decode").TokensPerSecond;
        double Efficiency(bool computesOnCpu)
        {
            var prediction = PolicyCost.Predict(config, grouped, 64, 16, profile, computesOnCpu, computeDtypeBytes: 4);
            string text = FlexGen.Host.Cli.BenchCommand.DescribeBounds(prediction, "hw.json", 1, reached, 1);
            var line = Regex.Match(text, @"  decode: .* efficiency ([\d.]+) \(measured / compute bound\)");
            Assert.True(line.Success, text);
            return double.Parse(line.Groups[1].Value, CultureInfo.InvariantCulture);
        }

        Assert.InRange(Efficiency(computesOnCpu: true), 0.9, 1.1);
        // Per GPU batch (on a GPU), the terms read the rate at 8 rows and pay 4 batches' tasks: a grouped run would exceed them.
        Assert.True(Efficiency(computesOnCpu: false) > 2, "per-batch terms");
    }

    [Fact]
    public void The_disk_as_the_run_got_it_should_bound_by_the_disks_busy_time_unless_another_bound_is_tighter()
    {
        var profile = TestHardwareCache.Profile;
        var prediction = PolicyCost.Predict(ModelFamilies.FromPreset("opt-1.3b"), Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 1), 16, 8, profile, computesOnCpu: true, computeDtypeBytes: 4);
        var tightestOther = prediction.Bounds.Where(b => b.Phase == "decode" && !b.IsDiskLink).MinBy(b => b.TokensPerSecond)!;
        const double tokens = 28;
        TierActivity Disk(double allows) => new("disk-io", 96, 2_000_000_000, 500_000_000, TimeSpan.FromSeconds(tokens / allows));
        var computeTier = new TierActivity("cpu-compute", 96, 1, 0, TimeSpan.FromSeconds(1));
        string Text(double allows, double measured) => BenchCommand.DescribeDiskAsRun(prediction, profile, "float32",
            [new("prefill", [computeTier], 64, 100, 1), new("decode", [computeTier, Disk(allows)], tokens, measured, 7)]);
        string Num(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

        // A disk slower than every other bound: its busy time bounds.
        double slowDisk = tightestOther.TokensPerSecond / 4;
        string slow = Text(slowDisk, slowDisk / 2);
        // A disk faster than the tightest other bound: that bound stays the tighter one.
        string fast = Text(2 * tightestOther.TokensPerSecond, tightestOther.TokensPerSecond / 2);

        Assert.StartsWith("disk tier as the run got it (traced):\n", slow);
        Assert.DoesNotContain("prefill:", slow); // the disk did nothing in that phase
        double seconds = tokens / slowDisk;
        Assert.Contains(
            $"  decode:  read 2.00 GB, wrote 0.50 GB in {Num(seconds, "F2")} s busy: {Num(2.5 / seconds, "F2")} GB/s " +
            $"(profile: read {Num(profile.DtocBdw / 1e9, "F2")}, write {Num(profile.CtodBdwG / 1e9, "F2")} GB/s); " +
            $"its busy time allows {Num(slowDisk, "F1")} token/s; efficiency 0.500 (measured / disk as run bound)\n", slow);
        Assert.Contains($"allows {Num(2 * tightestOther.TokensPerSecond, "F1")} token/s; efficiency 0.500 (measured / {tightestOther.Name} bound)", fast);
        Assert.Equal("", BenchCommand.DescribeDiskAsRun(prediction, profile, "float32", [new("decode", [computeTier], tokens, 2, 7)]));
    }

    [Fact]
    public void The_disk_as_the_run_got_it_should_bound_the_compute_beside_its_busy_time_at_the_profiles_share()
    {
        var profile = TestHardwareCache.Profile with { MatmulShareWhileDiskReads = 0.5 };
        var prediction = PolicyCost.Predict(ModelFamilies.FromPreset("opt-1.3b"), Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 1), 16, 8, profile, computesOnCpu: true, computeDtypeBytes: 4);
        double compute = prediction.Bounds.Single(b => b.Phase == "decode" && b.Name == "compute").TokensPerSecond;
        Assert.Contains(prediction.Bounds, b => b.Phase == "decode" && b.Name == CostTerms.ComputeBesideDiskReads);
        const double tokens = 28;
        // The disk busy for half the compute's time: beside it the compute takes 1 + 0.5 * 0.5 of its time alone.
        var disk = new TierActivity("disk-io", 96, 2_000_000_000, 0, TimeSpan.FromSeconds(tokens / compute / 2));
        var computeTier = new TierActivity("cpu-compute", 96, 1, 0, TimeSpan.FromSeconds(1));
        Assert.True(prediction.Bounds.Where(b => b.Phase == "decode" && !b.IsDiskLink && b.Name != CostTerms.ComputeBesideDiskReads)
            .All(b => b.TokensPerSecond >= compute), "the compute is the tightest other bound");

        string text = BenchCommand.DescribeDiskAsRun(prediction, profile, "float32", [new("decode", [computeTier, disk], tokens, 0.4 * compute, 7)]);

        Assert.Contains("efficiency 0.500 (measured / compute beside disk reads as run bound)", text);
    }

    [Fact]
    public void The_disk_as_the_run_got_it_should_say_when_a_step_read_more_than_the_profiles_disk_span()
    {
        var prediction = PolicyCost.Predict(ModelFamilies.FromPreset("opt-1.3b"), Policy.FromPercent([0, 0, 100, 0, 100, 0], 4, 1), 16, 8,
            TestHardwareCache.Profile, computesOnCpu: true, computeDtypeBytes: 4);
        var computeTier = new TierActivity("cpu-compute", 96, 1, 0, TimeSpan.FromSeconds(1));
        // 3 GB read in the phase's busy time: 1.5 GB a step over 2 steps.
        var disk = new TierActivity("disk-io", 96, 3_000_000_000, 0, TimeSpan.FromSeconds(2));
        string Text(double? spanBytes) => BenchCommand.DescribeDiskAsRun(prediction, TestHardwareCache.Profile with { DiskSpanBytes = spanBytes }, "bfloat16",
            [new("prefill", [computeTier], 64, 100, 1), new("decode", [computeTier, disk], 28, 10, 2)]);

        string shorter = Text(1L << 30);

        Assert.EndsWith(
            "  the profile's disk rates hold for 1 GiB of distinct transfers; a step of this run read 1.5 GB: a VM's host that caches " +
            "the shorter span reads a longer stream slower; `flexgen profile --compute-dtype bfloat16 --disk-span-gb 2` measures one as long (then `--hardware`)\n", shorter);
        Assert.DoesNotContain("distinct transfers", Text(2L << 30)); // 1.5 GB a step within a 2 GiB span
        Assert.DoesNotContain("distinct transfers", Text(null)); // a profile that did not record its span
    }

    [Fact]
    public async Task Bench_should_print_the_disk_as_the_run_got_it_only_when_the_disk_tier_worked()
    {
        using var folder = new TempFolder();
        string hardware = TestHardwareCache.WriteFile(folder);

        var fromDisk = await CliRunner.RunAsync(Bench("--percent", "0", "0", "100", "0", "100", "0", "--hardware", hardware, "--offload-dir", folder.Path));
        var resident = await CliRunner.RunAsync(Bench("--percent", "100", "0", "100", "0", "100", "0", "--hardware", hardware, "--offload-dir", folder.Path));

        Assert.True(fromDisk.ExitCode == 0, fromDisk.ToString());
        var decode = Regex.Match(fromDisk.Output, @"disk tier as the run got it \(traced\):\n(?:  prefill: .*\n)?  decode:  read ([\d.]+) GB, wrote 0.00 GB in ([\d.]+) s busy: .* its busy time allows ([\d.]+) token/s; efficiency ([\d.]+)");
        Assert.True(decode.Success, fromDisk.Output);
        Assert.True(double.Parse(decode.Groups[3].Value, CultureInfo.InvariantCulture) > 0, fromDisk.Output);
        Assert.True(resident.ExitCode == 0, resident.ToString());
        Assert.DoesNotContain("disk tier as the run got it", resident.Output);
    }

    [Fact]
    public async Task Bench_without_a_hardware_file_should_read_the_cached_profile_outside_the_users_home()
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync(Bench("--offload-dir", folder.Path));

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"hardware {HardwareProfileCache.Default.PathFor(ScalarType.Float32)}", result.Output);
        Assert.StartsWith(TestHardwareCache.Directory, HardwareProfileCache.Default.PathFor(ScalarType.Float32));
    }

    [Fact]
    public void The_cache_should_measure_on_first_use_and_read_the_file_after()
    {
        using var folder = new TempFolder();
        var cache = new HardwareProfileCache(folder.File("cache"));
        var options = new HardwareProfileOptions(folder.File("scratch"), TransferBytes: 1 << 20, SecondsPerMeasure: 0.01);

        var first = cache.LoadOrMeasure(ScalarType.Float32, options);
        var second = cache.LoadOrMeasure(ScalarType.Float32, options);

        Assert.True(first.Measured);
        Assert.False(second.Measured);
        Assert.Equal(first.Path, second.Path);
        Assert.Equal(first.Profile.ToJson(), second.Profile.ToJson());
        Assert.Contains(HardwareProfileCache.MachineKey(), Path.GetFileName(first.Path));
        Assert.NotNull(second.Profile.MmFlopsByRows);
        Assert.Equal([Path.GetFileName(first.Path)], Directory.GetFiles(cache.Directory).Select(Path.GetFileName));
    }

    [Fact]
    public async Task Generate_policy_auto_should_choose_print_and_run_a_policy_on_the_bundled_model()
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync("generate", "--policy", "auto", "--hardware", TestHardwareCache.WriteFile(folder), "--gen-len", "4",
            "--compute-dtype", "float32", "--offload-dir", folder.Path, "--trace", "", "--warmup", "false");

        Assert.True(result.ExitCode == 0, result.ToString());
        var chosen = Regex.Match(result.Output, @"auto policy: --gpu-batch-size (\d+) --num-gpu-batches (\d+) --percent ([\d. ]+) --cpu-cache-compute");
        Assert.True(chosen.Success, result.Output);
        // The built-in prompt set has 8 prompts: a larger block would only pad.
        Assert.True(int.Parse(chosen.Groups[1].Value, CultureInfo.InvariantCulture) * int.Parse(chosen.Groups[2].Value, CultureInfo.InvariantCulture) <= 8);
        Assert.Matches(@"auto predicted: prefill [\d.]+ token/s, decode [\d.]+ token/s, total [\d.]+ token/s", result.Output);
        Assert.Matches(@"auto predicted vs measured: prefill [\d.]+ vs [\d.]+, decode [\d.]+ vs [\d.]+, total [\d.]+ vs [\d.]+ token/s", result.Output);
        Assert.Contains($"policy: gpu-batch-size {chosen.Groups[1].Value} x num-gpu-batches {chosen.Groups[2].Value}", result.Output);
    }

    [Fact]
    public async Task Bench_policy_auto_should_run_its_choice_and_print_predicted_against_measured()
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync("bench", "--model", TestPaths.BundledModel, "--policy", "auto", "--prompt-len", "8", "--gen-len", "4",
            "--no-log", "--warmup", "false", "--compute-dtype", "float32", "--offload-dir", folder.Path, "--cpu-mem", "2");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("auto policy: --gpu-batch-size", result.Output);
        Assert.Matches(@"decode: +bound .* predicted [\d.]+, measured [\d.]+ token/s", result.Output);
    }

    [Fact]
    public async Task Policy_auto_should_refuse_with_exit_2_naming_the_budgets_and_the_smallest_need_when_nothing_fits()
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync("generate", "--policy", "auto", "--hardware", TestHardwareCache.WriteFile(folder), "--gen-len", "4",
            "--compute-dtype", "float32", "--offload-dir", folder.Path, "--cpu-mem", "0.0001", "--disk-mem", "0.0001", "--trace", "");

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("error: --policy auto: no policy of opt-tiny fits the budgets (gpu", result.Error);
        Assert.Matches(@"the smallest run \(a block of 1 x 1, weights and cache on disk, activations on the CPU\) needs gpu [\d.]+ GiB, cpu [\d.]+ GiB, disk [\d.]+ GiB", result.Error);
        Assert.Contains("--cpu-mem", result.Error);
    }

    [Theory]
    [InlineData("--percent", "100", "0", "100", "0", "100", "0")]
    [InlineData("--gpu-batch-size", "4")]
    [InlineData("--cpu-cache-compute")]
    public async Task Policy_auto_beside_a_flag_it_chooses_should_be_a_usage_error(params string[] flag)
    {
        var result = await CliRunner.RunAsync(["generate", "--policy", "auto", .. flag]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"{flag[0]}: --policy auto chooses it", result.Error);
    }

    [Fact]
    public void The_hosting_option_should_choose_a_policy_the_engine_places_within_the_budgets()
    {
        using var folder = new TempFolder();
        var options = new FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32", OffloadDir = folder.File("offload"), CpuMem = 2, Hardware = TestHardwareCache.WriteFile(folder),
            Policy = new PolicyOptions { Auto = true, PlanPromptLen = 16, PlanGenLen = 8, PlanMaxBlockSize = 32 },
        };

        var setup = FlexGenSetup.Create(options);

        var auto = Assert.IsType<AutoPlan>(setup.AutoPlan);
        Assert.Same(auto.Policy, setup.Policy);
        Assert.True(auto.Policy.GpuBatchSize * auto.Policy.NumGpuBatches <= 32);
        Assert.All(auto.Policy.Percent, p => Assert.Equal(Math.Round(p), p));
        PlacementPlan.Create(setup.Model.Config, setup.Policy, 16, 8, budgets: setup.Budgets, computeDtypeBytes: 4, computesOnCpu: setup.Budgets.GpuInCpuMemory); // does not throw
        Assert.True(auto.Prediction.Throughput > 0);
    }

    [Fact]
    public void The_check_before_loading_should_count_the_buffers_of_the_pipelines_prefetch_steps()
    {
        using var folder = new TempFolder();
        FlexGenSetup Setup(string? hocon) => FlexGenSetup.Create(new FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32", OffloadDir = folder.File("offload"), Hocon = hocon,
            Policy = new PolicyOptions { Percent = [100, 0, 0, 100, 100, 0] }, // the cache on the CPU, loaded at every step
        });

        var plain = Setup(null);
        var deeper = Setup("flexgen.pipeline.prefetch-steps = 3");

        Assert.Equal(1, plain.Pipeline.PrefetchSteps);
        Assert.Equal(3, deeper.Pipeline.PrefetchSteps);
        var (one, three) = (plain.CheckFits(16, 8), deeper.CheckFits(16, 8));
        Assert.Equal(3, three.PrefetchSteps);
        Assert.Equal(one.Need.Gpu.LoadedCache * 2, three.Need.Gpu.LoadedCache); // 4 steps' loads in flight, not 2
        var bad = Assert.Throws<FlexGen.Actors.Actors.PipelineSettingsException>(() => Setup("flexgen.pipeline.prefetch-steps = 0"));
        Assert.Equal(FlexGen.Actors.Actors.PipelineSettings.PrefetchStepsKey, bad.Key);
    }

    [Theory]
    [InlineData(0, 8, null, FlexGenOptionKeys.PlanPromptLen)]
    [InlineData(16, 0, null, FlexGenOptionKeys.PlanGenLen)]
    [InlineData(16, 8, 0, FlexGenOptionKeys.PlanMaxBlockSize)]
    public void The_hosting_option_should_name_a_bad_workload_by_its_key(int promptLen, int genLen, int? maxBlock, string key)
    {
        var options = new FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32",
            Policy = new PolicyOptions { Auto = true, PlanPromptLen = promptLen, PlanGenLen = genLen, PlanMaxBlockSize = maxBlock },
        };

        var ex = Assert.Throws<FlexGenOptionsException>(() => FlexGenSetup.Create(options));

        Assert.Equal(key, ex.Key);
    }

    [Fact]
    public void The_hosting_option_should_name_a_missing_hardware_file_by_its_key()
    {
        var options = new FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32", Hardware = "/nonexistent/hw.json",
            Policy = new PolicyOptions { Auto = true },
        };

        var ex = Assert.Throws<FlexGenOptionsException>(() => FlexGenSetup.Create(options));

        Assert.Equal(FlexGenOptionKeys.Hardware, ex.Key);
        Assert.Contains("file not found", ex.Message);
    }
}
