namespace FlexGen.Host.Tests;

using System.Diagnostics;
using System.Text.RegularExpressions;

/// <summary>
/// Runs too large for a tier's budget are refused up front by every command that runs a model: exit 2, one line naming
/// the tier, the bytes needed with their breakdown and the budget, within seconds (they used to grow until memory was
/// gone), leaving nothing in the offload folder.
/// </summary>
public class BudgetCommandTests
{
    /// <summary>Far below the minutes the old behaviour took to run out of memory: a guard, not a benchmark.</summary>
    private static readonly TimeSpan Quickly = TimeSpan.FromSeconds(20);

    private static readonly Regex Refusal = new(
        @"^error: The (Gpu|Cpu|Disk) tier.* needs [\d,]+ bytes \([\d.]+ GiB: .+\) but its budget is [\d,]+ bytes \([\d.]+ GiB, .+\)\. " +
        @"--gpu-mem, --cpu-mem and --disk-mem set the budgets \(GB of 2\^30 bytes\)\.$");

    private static async Task<CliRunner.CliResult> RefusedAsync(TempFolder offload, params string[] args)
    {
        var clock = Stopwatch.StartNew();
        var result = await CliRunner.RunAsync([.. args, "--offload-dir", offload.Path]);
        Assert.True(clock.Elapsed < Quickly, $"took {clock.Elapsed}\n{result}");
        Assert.True(result.ExitCode == 2, result.ToString());
        string[] lines = result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var line = Assert.Single(lines, l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Matches(Refusal, line);
        Assert.Empty(Directory.EnumerateFileSystemEntries(offload.Path));
        return result;
    }

    [Fact]
    public async Task Generate_with_a_billion_sequences_per_gpu_batch_should_be_refused()
    {
        using var offload = new TempFolder();

        var result = await RefusedAsync(offload, "generate", "--gpu-batch-size", "1000000000", "--trace", "");

        Assert.Contains("KV cache 16,128,000,000,000", result.Error); // 2 * 3 layers * (21, 1e9 * 4, 16) * 2 bytes
        Assert.Contains("its budget is", result.Error);
    }

    [Fact]
    public async Task Generate_with_a_million_layers_should_be_refused_by_the_byte_formula()
    {
        using var offload = new TempFolder();
        using var model = new TempFolder();
        // config.json only: the refusal comes before any weight file is looked for.
        string config = File.ReadAllText(Path.Combine(TestPaths.BundledModel, "config.json"));
        File.WriteAllText(model.File("config.json"), Regex.Replace(config, @"""num_hidden_layers"": \d+", @"""num_hidden_layers"": 1000000"));

        var result = await RefusedAsync(offload, "generate", "--model", model.Path, "--gpu-mem", "80", "--trace", "");

        // (3,348,608 + 3,217,536 + 1,000,000 * 49,984) elements * 4 bytes (float32 compute: the GPU tier keeps weights in the compute dtype), against --gpu-mem 80 = 85,899,345,920 bytes.
        Assert.Contains("error: The Gpu tier needs ", result.Error);
        Assert.Contains("weights 199,962,264,576", result.Error);
        Assert.Contains("but its budget is 85,899,345,920 bytes (80.00 GiB, --gpu-mem)", result.Error);
    }

    [Fact]
    public async Task Bench_of_opt_30b_all_on_the_gpu_should_be_refused()
    {
        using var offload = new TempFolder();

        var result = await RefusedAsync(offload, "bench", "--model", "opt-30b", "--path", "_DUMMY_", "--percent", "100", "0", "100", "0", "100", "0",
            "--prompt-len", "64", "--gen-len", "8", "--no-log", "--gpu-mem", "40", "--cpu-mem", "40");

        Assert.Contains("error: The Gpu tier needs ", result.Error);
        Assert.Contains("weights 121,339,559,936", result.Error);
        Assert.Contains("(40.00 GiB, --gpu-mem)", result.Error);
    }

    [Fact]
    public async Task Bench_of_a_cache_larger_than_memory_should_be_refused()
    {
        using var offload = new TempFolder();

        var result = await RefusedAsync(offload, "bench", "--model", "opt-125m", "--path", "_DUMMY_", "--percent", "100", "0", "0", "100", "100", "0",
            "--gpu-batch-size", "4096", "--num-gpu-batches", "8", "--prompt-len", "1024", "--gen-len", "1000", "--no-log");

        // k and v of 12 layers x 8 GPU batches of (2023, 4096 * 12, 64) float16 on the CPU.
        Assert.Contains("KV cache 2,443,702,173,696", result.Error);
    }

    [Fact]
    public async Task Bench_pipeline_with_100_GB_blocks_should_be_refused()
    {
        using var offload = new TempFolder();

        var result = await RefusedAsync(offload, "bench-pipeline", "--hidden-size", "65536", "--heads", "64", "--blocks", "8", "--weights-disk-percent", "0",
            "--compute-dtype", "float32");

        Assert.Contains("weights 1,651,460,014,080", result.Error); // float32 compute: GPU-homed weights count 4 bytes
    }

    [Theory]
    [InlineData("--gpu-mem", "0")]
    [InlineData("--cpu-mem", "-1")]
    [InlineData("--disk-mem", "NaN")]
    public async Task A_budget_that_is_not_a_positive_size_should_be_a_usage_error_naming_the_flag(string flag, string value)
    {
        var result = await CliRunner.RunAsync("generate", flag, value, "--trace", "");

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains($"error: {flag} {value}: must be a positive number of GB (2^30 bytes).", result.Error);
    }

    [Fact]
    public async Task A_run_that_fits_its_budgets_should_still_run()
    {
        var result = await CliRunner.RunAsync("generate", "--gen-len", "2", "--warmup", "false", "--trace", "", "--cpu-mem", "8", "--disk-mem", "1");

        Assert.True(result.ExitCode == 0, result.ToString());
    }
}

/// <summary>The hosting options' budgets: GB of 2^30 bytes, named by their key, checked by the same rule.</summary>
public class BudgetOptionTests
{
    [Fact]
    public void FlexGenOptions_budgets_should_override_the_machine_and_refuse_a_run_that_does_not_fit()
    {
        var setup = Hosting.FlexGenSetup.Create(new Hosting.FlexGenOptions
        {
            Model = TestPaths.BundledModel, ComputeDtype = "float32", GpuMem = 0.5, CpuMem = 0.001, DiskMem = 2,
        });

        Assert.Equal(new Tensors.Tiers.TierBudget(536_870_912, "FlexGen:GpuMem"), setup.Budgets.Gpu);
        Assert.Equal(new Tensors.Tiers.TierBudget(1_073_741, "FlexGen:CpuMem"), setup.Budgets.Cpu);
        Assert.Equal(new Tensors.Tiers.TierBudget(2_147_483_648, "FlexGen:DiskMem"), setup.Budgets.Disk);
        Assert.Same(setup.Budgets, setup.Settings.Budgets);
        var ex = Assert.Throws<Tensors.Placement.TierCapacityExceededException>(() => setup.CheckFits(12, 10));
        Assert.Contains("(0.00 GiB, FlexGen:CpuMem)", ex.Message);
    }
}
