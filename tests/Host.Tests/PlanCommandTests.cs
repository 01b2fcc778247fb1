namespace FlexGen.Host.Tests;

using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

/// <summary>
/// <c>flexgen plan --json</c> against FlexLLMGen's cost model run as it ships (tests/Fixtures/cost-model): every fixed
/// policy's feasibility and throughput, every block's optimum, its search's block, and the grid search at least as good.
/// </summary>
public class PlanCommandTests(ITestOutputHelper output)
{
    /// <summary>The acceptance bound on a throughput against FlexLLMGen's (its solver is CBC, ours GLOP).</summary>
    private const double Tolerance = 0.005;

    private static readonly JsonArray Cases = (JsonArray)JsonNode.Parse(File.ReadAllText(
        Path.Combine(AppContext.BaseDirectory, "Fixtures", "cost-model", "flexllmgen_cost_model.json")))!["cases"]!;

    public static TheoryData<string> CaseNames() => [.. Cases.Select(c => (string)c!["name"]!)];

    private static JsonNode Case(string name) => Cases.Single(c => (string)c!["name"]! == name)!;

    /// <summary>The case's model, lengths, budgets and hardware (written to a file in <paramref name="folder"/>) as flags.</summary>
    private static string[] Inputs(JsonNode c, TempFolder folder)
    {
        string hardware = folder.File("hardware.json");
        File.WriteAllText(hardware, c["hardware"]!.ToJsonString());
        return
        [
            "plan", "--model", (string)c["model"]!, "--prompt-len", $"{c["prompt_len"]}", "--gen-len", $"{c["gen_len"]}",
            "--gpu-mem", $"{c["gpu_mem_gb"]}", "--cpu-mem", $"{c["cpu_mem_gb"]}", "--disk-mem", $"{c["nvme_mem_gb"]}", "--hardware", hardware,
        ];
    }

    private static string[] Block(JsonNode entry)
    {
        int bls = (int)entry["bls"]!, gbs = (int)entry["gbs"]!;
        return ["--gpu-batch-size", $"{gbs}", "--num-gpu-batches", $"{bls / gbs}"];
    }

    private static async Task<JsonElement> PlanJsonAsync(params string[] args)
    {
        var result = await CliRunner.RunAsync([.. args, "--json"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        using var document = JsonDocument.Parse(result.Output);
        return document.RootElement.Clone();
    }

    private void Within(string what, double expected, double actual)
    {
        double error = (actual - expected) / expected;
        output.WriteLine($"| {what} | {expected:G8} | {actual:G8} | {error:P4} |");
        Assert.True(Math.Abs(error) <= Tolerance, $"{what}: expected {expected}, got {actual} ({error:P3} off)");
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task Fixed_policies_should_match_FlexLLMGens_verdict_and_throughput(string name)
    {
        var c = Case(name);
        using var folder = new TempFolder();
        foreach (var entry in c["fixed"]!.AsArray())
        {
            double alpha = (double)entry!["alpha"]!;
            var percent = entry["percent_in"]!.AsArray().Select(p => $"{p}");
            var plan = await PlanJsonAsync([.. Inputs(c, folder), .. Block(entry), "--percent", .. percent, "--alpha", $"{alpha}"]);

            string what = $"{name} fixed {entry["gbs"]} x {(int)entry["bls"]! / (int)entry["gbs"]!} alpha {alpha}";
            bool feasible = (int)entry["status"]! == 1;
            Assert.True(feasible == plan.GetProperty("feasible").GetBoolean(), $"{what}: FlexLLMGen says feasible = {feasible}");
            if (!feasible)
            {
                output.WriteLine($"| {what} | infeasible | infeasible | - |");
                continue;
            }
            Within(what, (double)entry["throughput"]!, plan.GetProperty("throughput").GetDouble());
            Within(what + " prefill_s", (double)entry["prefill_s"]!, plan.GetProperty("prefill_s").GetDouble());
            Within(what + " decode_s", (double)entry["decode_s"]!, plan.GetProperty("decode_s").GetDouble());
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task The_best_placement_for_a_block_should_match_FlexLLMGens_optimum(string name)
    {
        var c = Case(name);
        using var folder = new TempFolder();
        foreach (var entry in c["block_optimum"]!.AsArray().Select(e => e!))
        {
            var plan = await PlanJsonAsync([.. Inputs(c, folder), .. Block(entry), "--alpha", $"{entry["alpha"]}"]);

            Assert.True(plan.GetProperty("feasible").GetBoolean());
            Within($"{name} optimum {entry["gbs"]} x {(int)entry["bls"]! / (int)entry["gbs"]!}", (double)entry["throughput"]!, plan.GetProperty("throughput").GetDouble());
            double gpuBudget = (double)c["gpu_mem_gb"]! * (double)entry["alpha"]! * (1L << 30);
            Assert.True(plan.GetProperty("gpu_peak_bytes").GetInt64() <= gpuBudget * (1 + 1e-9));
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task FlexLLMGens_search_should_return_its_block_and_the_grid_search_should_be_no_worse(string name)
    {
        var c = Case(name);
        var expected = c["search"]!;
        using var folder = new TempFolder();

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var flexgen = await PlanJsonAsync([.. Inputs(c, folder), "--search", "flexgen"]);
        var flexgenTime = clock.Elapsed;
        clock.Restart();
        var grid = await PlanJsonAsync(Inputs(c, folder));
        output.WriteLine($"{name}: flexgen search {flexgenTime.TotalSeconds:F2} s, grid {clock.Elapsed.TotalSeconds:F2} s");

        Assert.Equal((int)expected["gpu_batch_size"]!, flexgen.GetProperty("gpu_batch_size").GetInt32());
        Assert.Equal((int)expected["num_gpu_batches"]!, flexgen.GetProperty("num_gpu_batches").GetInt32());
        Within($"{name} search flexgen", (double)expected["throughput"]!, flexgen.GetProperty("throughput").GetDouble());
        double gridThroughput = grid.GetProperty("throughput").GetDouble();
        output.WriteLine($"| {name} search grid ({grid.GetProperty("gpu_batch_size")} x {grid.GetProperty("num_gpu_batches")}) | " +
                         $"{(double)expected["throughput"]!:G8} | {gridThroughput:G8} | {gridThroughput / (double)expected["throughput"]! - 1:P4} |");
        Assert.True(gridThroughput >= flexgen.GetProperty("throughput").GetDouble() * (1 - 1e-9));
    }

    [Fact]
    public async Task The_human_readable_plan_should_say_the_policy_times_bounds_and_peaks()
    {
        var c = Case("t4-6.7b-256");
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync([.. Inputs(c, folder), "--gpu-batch-size", "4", "--num-gpu-batches", "1"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("policy: --gpu-batch-size 4 --num-gpu-batches 1 --percent", result.Output);
        Assert.Matches(@"prefill: [\d.]+ s \([\d.]+ s per layer\), bound by ", result.Output);
        Assert.Matches(@"decode: +[\d.]+ s \([\d.]+ s per layer and token\), bound by ", result.Output);
        Assert.Matches(@"total: +[\d.]+ s for 128 tokens: 42\.9\d* tok/s", result.Output);
        Assert.Matches(@"gpu +[\d.]+ GB / [\d.]+ GB of 12\.000 GB", result.Output);
    }

    [Fact]
    public async Task An_infeasible_policy_should_exit_0_and_say_so()
    {
        var c = Case("t4-6.7b-256");
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync([.. Inputs(c, folder), "--gpu-batch-size", "4", "--num-gpu-batches", "1", "--percent", "100", "0", "100", "0", "100", "0"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("infeasible: block 4 x 1 with this placement exceeds a budget", result.Output);
    }

    public static TheoryData<string[], string> BadArguments() => new()
    {
        { ["--alpha", "0"], "--alpha 0: must be a positive number." },
        { ["--gpu-batch-size", "4"], "--gpu-batch-size: a block needs both --gpu-batch-size and --num-gpu-batches." },
        { ["--gpu-batch-size", "0", "--num-gpu-batches", "1"], "--gpu-batch-size" },
        { ["--percent", "100", "0", "100", "0", "100"], "--percent needs six numbers" },
        { ["--percent", "60", "60", "100", "0", "100", "0"], "--percent" },
        { ["--gpu-batch-size", "4", "--num-gpu-batches", "1", "--search", "flexgen"], "--search: searches the blocks" },
        { ["--prompt-len", "0"], "--prompt-len 0: must be >= 1." },
        { ["--gpu-mem", "0"], "--gpu-mem 0: must be a positive number of GB (2^30 bytes)." },
    };

    [Theory]
    [MemberData(nameof(BadArguments))]
    public async Task Bad_arguments_should_exit_2_naming_the_flag(string[] extra, string message)
    {
        var c = Case("t4-6.7b-256");
        using var folder = new TempFolder();

        // A flag the inputs already give takes the bad value in their place.
        var args = Inputs(c, folder).ToList();
        int given = args.IndexOf(extra[0]);
        if (given >= 0) args.RemoveRange(given, 2);

        var result = await CliRunner.RunAsync([.. args, .. extra]);

        Assert.True(result.ExitCode == 2, result.ToString());
        string line = Assert.Single(result.Error.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains(message, line);
    }

    [Fact]
    public async Task A_hardware_file_missing_a_constant_should_exit_2_naming_it()
    {
        var c = Case("t4-6.7b-256");
        using var folder = new TempFolder();
        var args = Inputs(c, folder);
        var hardware = c["hardware"]!.DeepClone().AsObject();
        hardware.Remove("dtoc_bdw");
        File.WriteAllText(folder.File("hardware.json"), hardware.ToJsonString());

        var result = await CliRunner.RunAsync(args);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("error: --hardware", result.Error);
        Assert.Contains("missing dtoc_bdw", result.Error);
    }

    [Fact]
    public async Task An_unknown_model_should_exit_2()
    {
        using var folder = new TempFolder();
        var args = Inputs(Case("t4-6.7b-256"), folder);
        args[2] = "opt-7b";

        var result = await CliRunner.RunAsync(args);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("error: --model opt-7b: Unknown model", result.Error);
    }
}
