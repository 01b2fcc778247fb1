namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;
using FlexGen.Host.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Bad options: the embedding API throws <see cref="FlexGenOptionsException"/> naming the configuration key; the CLI
/// names the flag instead.
/// </summary>
public class OptionErrorTests
{
    public static TheoryData<string, string?, string, string> BadSettings => new()
    {
        // key, value, the key the exception names, a piece of its rule
        { "FlexGen:ComputeDtype", "int8", FlexGenOptionKeys.ComputeDtype, "expected float32, bfloat16 or float16" },
        { "FlexGen:Model", "opt-999b", FlexGenOptionKeys.Model, "not a known preset" },
        { "FlexGen:Model", "opt-350m", FlexGenOptionKeys.Model, "opt-350m" },
        { "FlexGen:Model", "./no/such/folder", FlexGenOptionKeys.Model, "model folder not found" },
        { "FlexGen:Path", "/no/such/weights", FlexGenOptionKeys.Path, "no weights folder" },
        { "FlexGen:Policy:GpuBatchSize", "0", FlexGenOptionKeys.GpuBatchSize, "must be >= 1" },
        { "FlexGen:Policy:NumGpuBatches", "0", FlexGenOptionKeys.NumGpuBatches, "must be >= 1" },
        { "FlexGen:Policy:Percent:0", "150", FlexGenOptionKeys.Percent, "WGpuPercent = 150" },
        { "FlexGen:Policy:AttnSparsity", "1.5", FlexGenOptionKeys.AttnSparsity, "AttnSparsity = 1.5" },
        { "FlexGen:GpuMem", "0", FlexGenOptionKeys.GpuMem, "must be a positive number of GB (2^30 bytes)" },
        { "FlexGen:CpuMem", "-1", FlexGenOptionKeys.CpuMem, "must be a positive number of GB" },
        { "FlexGen:DiskMem", "-0.5", FlexGenOptionKeys.DiskMem, "must be a positive number of GB" },
        { "FlexGen:ComputeThreads", "0", FlexGenOptionKeys.ComputeThreads, "must be a thread count in 1..1024" },
        { "FlexGen:IoThreads", "1025", FlexGenOptionKeys.IoThreads, "must be a thread count in 1..1024" },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void AddFlexGen_with_a_bad_option_should_throw_the_typed_error_naming_its_key(string key, string? value, string expectedKey, string rule)
    {
        var settings = new Dictionary<string, string?> { ["FlexGen:ComputeDtype"] = "float32", [key] = value };
        // A preset's weights folder is only looked for with a preset.
        if (key == "FlexGen:Path") settings["FlexGen:Model"] = "opt-125m";
        if (key == "FlexGen:Policy:Percent:0") foreach (int i in Enumerable.Range(1, 5)) settings[$"FlexGen:Policy:Percent:{i}"] = i % 2 == 0 ? "100" : "0";
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();

        var ex = Assert.Throws<FlexGenOptionsException>(() => new ServiceCollection().AddFlexGen(configuration));

        Assert.Equal(expectedKey, ex.Key);
        Assert.StartsWith(expectedKey, ex.Message, StringComparison.Ordinal);
        Assert.Contains(rule, ex.Rule);
        Assert.DoesNotContain("--", ex.Message);
    }

    [Fact]
    public void FlexGenSetup_should_name_the_offload_dir_key_when_a_file_is_in_the_way()
    {
        using var folder = new TempFolder();
        string file = folder.File("not-a-folder");
        File.WriteAllText(file, "");

        var ex = Assert.Throws<FlexGenOptionsException>(() =>
            FlexGenSetup.Create(new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "float32", OffloadDir = file }));

        Assert.Equal(FlexGenOptionKeys.OffloadDir, ex.Key);
        Assert.Equal(file, ex.Value);
        Assert.Equal($"FlexGen:OffloadDir {file}: a file is in the way.", ex.Message);
    }

    [Fact]
    public void The_CLI_should_map_every_checked_key_to_a_flag_of_generate_and_bench()
    {
        var root = FlexGenCli.BuildRoot();
        foreach (string command in new[] { "generate", "bench" })
        {
            var flags = root.Subcommands.Single(c => c.Name == command).Options.Select(o => o.Name).ToHashSet();
            Assert.All(FlexGenOptionKeys.Checked, key => Assert.Contains(GenerationFlags.FlagOf(key), flags));
        }
        Assert.Equal("--compute-dtype", GenerationFlags.FlagOf(FlexGenOptionKeys.ComputeDtype));
        Assert.Equal("--percent", GenerationFlags.FlagOf(FlexGenOptionKeys.Percent));
        Assert.Equal("--offload-dir", GenerationFlags.FlagOf(FlexGenOptionKeys.OffloadDir));
        Assert.Equal("--gpu-mem", GenerationFlags.FlagOf(FlexGenOptionKeys.GpuMem));
        Assert.Equal("--cpu-mem", GenerationFlags.FlagOf(FlexGenOptionKeys.CpuMem));
        Assert.Equal("--disk-mem", GenerationFlags.FlagOf(FlexGenOptionKeys.DiskMem));
    }

    [Theory]
    [InlineData(new[] { "generate", "--compute-dtype", "int8" }, "--compute-dtype int8: expected float32, bfloat16 or float16.")]
    [InlineData(new[] { "generate", "--model", "./no/such/folder" }, "--model ./no/such/folder: model folder not found.")]
    [InlineData(new[] { "bench", "--model", "opt-125m", "--path", "/no/such/weights" }, "--path /no/such/weights: no weights folder")]
    [InlineData(new[] { "generate", "--compute-threads", "0" }, "--compute-threads 0: must be a thread count in 1..1024.")]
    [InlineData(new[] { "bench", "--io-threads", "2000" }, "--io-threads 2000: must be a thread count in 1..1024.")]
    [InlineData(new[] { "serve", "--compute-threads", "-1" }, "--compute-threads -1: must be a thread count in 1..1024.")]
    [InlineData(new[] { "bench-pipeline", "--compute-threads", "0" }, "--compute-threads 0: must be a thread count in 1..1024.")]
    [InlineData(new[] { "generate", "--num-gpu-batches", "0" }, "--num-gpu-batches: Policy.NumGpuBatches = 0 is invalid: must be >= 1.")]
    public async Task The_CLI_should_name_the_flag_not_the_key_with_exit_code_2(string[] args, string expected)
    {
        var result = await CliRunner.RunAsync(args);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains($"error: {expected}", result.Error);
        Assert.DoesNotContain("FlexGen:", result.Error);
    }
}
