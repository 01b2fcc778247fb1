namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;

/// <summary>
/// <c>flexgen plan</c>: FlexLLMGen's cost model (experimental/cost_model.py) on a model, a workload, budgets and a
/// hardware file. With <c>--percent</c> and a block it evaluates that policy; with a block only it finds the best
/// placement for it; with neither it searches the blocks.
/// </summary>
public static class PlanCommand
{
    private static readonly JsonSerializerOptions SnakeCase = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Build()
    {
        var model = new Option<string>("--model")
        {
            Description = $"Preset ({string.Join(", ", ModelFamilies.PresetNames)}) or a folder holding config.json.",
            Required = true,
        };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens per sequence.", DefaultValueFactory = _ => 512 };
        var genLen = new Option<int>("--gen-len") { Description = "New tokens per sequence.", DefaultValueFactory = _ => 32 };
        var gpuMem = Budget("--gpu-mem", "GPU memory");
        var cpuMem = Budget("--cpu-mem", "CPU memory");
        var diskMem = Budget("--disk-mem", "disk");
        var hardware = new Option<string>("--hardware")
        {
            Description = "JSON file of FlexLLMGen's hardware constants: ctog_bdw, gtoc_bdw_cache, gtoc_bdw_hidden, dtoc_bdw, " +
                          "ctod_bdw_cache_p, ctod_bdw_hidden_p, ctod_bdw_g (bytes/s), mm_flops_p, mm_flops_g, bmm_flops_p, " +
                          "bmm_flops_g, cpu_flops (FLOP/s), c1, c2, c3.",
            HelpName = "FILE.json",
            Required = true,
        };
        var gpuBatchSize = new Option<int?>("--gpu-batch-size") { Description = "Evaluate this block (with --num-gpu-batches) instead of searching." };
        var numGpuBatches = new Option<int?>("--num-gpu-batches") { Description = "GPU batches of the block (with --gpu-batch-size)." };
        var percent = new Option<double[]>("--percent")
        {
            Description = "Fix the placement: six numbers, weights GPU% CPU%, cache GPU% CPU%, activations GPU% CPU%.",
            AllowMultipleArgumentsPerToken = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var alpha = new Option<double>("--alpha")
        {
            Description = "Scales the three budgets (FlexLLMGen's alpha_g, alpha_c, alpha_n): < 1 is conservative, > 1 aggressive.",
            DefaultValueFactory = _ => PlanProblem.DefaultAlpha,
        };
        var search = new Option<string>("--search")
        {
            Description = "grid: GPU batch sizes 1, 2, 3, 4, 6, 8, 12, ... with every number of GPU batches that fits (2% steps past 256), never worse than flexgen; flexgen: FlexLLMGen's loop, early break included.",
            DefaultValueFactory = _ => "grid",
        };
        search.AcceptOnlyFromAmong("grid", "flexgen");
        var json = new Option<bool>("--json") { Description = "Print one JSON object (feasible, throughput, times, block, percent, peaks)." };

        var command = new Command("plan",
            "FlexLLMGen's cost model: the best policy for a model, workload, budgets and hardware (or the cost of a given one).")
        {
            model, promptLen, genLen, gpuMem, cpuMem, diskMem, hardware, gpuBatchSize, numGpuBatches, percent, alpha, search, json,
        };
        command.SetAction(parse =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            var problem = new PlanProblem(
                Shape(parse.GetValue(model)!),
                AtLeastOne(parse, promptLen),
                AtLeastOne(parse, genLen),
                new PlanBudgets(GenerationFlags.BudgetBytes(parse, gpuMem)!.Value, GenerationFlags.BudgetBytes(parse, cpuMem)!.Value,
                    GenerationFlags.BudgetBytes(parse, diskMem)!.Value),
                Hardware(parse.GetValue(hardware)!),
                Alpha(parse.GetValue(alpha)));
            // An absent --percent reads as an empty array: absent means no fixed placement.
            double[]? fixedPercent = parse.GetResult(percent) is null ? null : parse.GetValue(percent);
            var (block, placement) = BlockAndPlacement(parse.GetValue(gpuBatchSize), parse.GetValue(numGpuBatches), fixedPercent);
            bool searchGiven = parse.GetResult(search) is { Implicit: false };
            if (block is not null && searchGiven)
                throw new UsageException("--search: searches the blocks, so it goes without --gpu-batch-size and --num-gpu-batches.");

            var plan = block is not null
                ? new Plan(CostModel.Evaluate(problem, block, placement), block, placement, null, null)
                : Search(problem, placement, parse.GetValue(search) == "flexgen" ? SearchKind.FlexLlmGen : SearchKind.Grid);
            if (parse.GetValue(json)) console.Output.WriteLine(JsonSerializer.Serialize(PlanJson.Of(plan), SnakeCase));
            else Describe(console.Output, problem, parse.GetValue(model)!, parse.GetValue(hardware)!, plan);
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>What the command answers: the evaluation (or the search's best), with what was asked and how it was found.</summary>
    private sealed record Plan(PlanEvaluation? Evaluation, PlanBlock? AskedBlock, PlanPlacement? AskedPlacement, SearchKind? Search, PlanSearchResult? SearchResult)
    {
        public bool Feasible => Evaluation is { Feasible: true };
    }

    private static Plan Search(PlanProblem problem, PlanPlacement? placement, SearchKind kind)
    {
        var result = PolicySearch.Run(kind, problem, placement);
        return new Plan(result.Best, null, placement, kind, result);
    }

    private static Option<double?> Budget(string name, string what) => new(name)
    {
        Description = $"Budget of {what} in GB (GiB: 2^30 bytes), before --alpha.",
        HelpName = "GB",
        Required = true,
    };

    private static int AtLeastOne(ParseResult parse, Option<int> option)
    {
        int value = parse.GetValue(option);
        return value >= 1 ? value : throw new UsageException($"{option.Name} {value}: must be >= 1.");
    }

    private static double Alpha(double alpha) =>
        double.IsFinite(alpha) && alpha > 0 ? alpha : throw new UsageException($"--alpha {alpha.ToString(CultureInfo.InvariantCulture)}: must be a positive number.");

    private static ModelShape Shape(string model)
    {
        try
        {
            return ModelShape.Of(ModelFamilies.FromNameOrPath(model));
        }
        catch (Exception ex) when (ex is UnknownModelException or UnsupportedModelException or ModelConfigException)
        {
            throw new UsageException($"--model {model}: {ex.Message}");
        }
    }

    private static HardwareProfile Hardware(string path)
    {
        try
        {
            return HardwareProfile.Read(path);
        }
        catch (HardwareProfileException ex)
        {
            throw new UsageException($"--hardware {ex.Message}");
        }
    }

    /// <summary>
    /// The block (both flags, or neither) and the fixed placement, checked by the policy's own rules (a broken one names
    /// its flag, as for generate).
    /// </summary>
    private static (PlanBlock? Block, PlanPlacement? Placement) BlockAndPlacement(int? gpuBatchSize, int? numGpuBatches, double[]? percent)
    {
        if (gpuBatchSize.HasValue != numGpuBatches.HasValue)
            throw new UsageException($"{(gpuBatchSize.HasValue ? "--gpu-batch-size" : "--num-gpu-batches")}: a block needs both --gpu-batch-size and --num-gpu-batches.");
        if (percent is { Length: not 6 })
            throw new UsageException($"--percent needs six numbers (weights GPU CPU, cache GPU CPU, activations GPU CPU), got {percent.Length}: {string.Join(' ', percent)}.");
        _ = new PolicyOptions
        {
            GpuBatchSize = gpuBatchSize ?? 1,
            NumGpuBatches = numGpuBatches ?? 1,
            Percent = percent ?? [.. Policy.AllGpuPercent],
        }.ToPolicy();
        return (gpuBatchSize is { } g && numGpuBatches is { } b ? new PlanBlock(g, b) : null,
            percent is null ? null : PlanPlacement.FromPercent(percent));
    }

    /// <summary>The <c>--json</c> contract: one object, snake_case names; unknown values (no placement fits) are null.</summary>
    private sealed record PlanJson(
        bool Feasible, double Throughput, double? PrefillS, double? DecodeS, int? GpuBatchSize, int? NumGpuBatches,
        double[]? Percent, long? GpuPeakBytes, long? CpuPeakBytes, long? DiskPeakBytes)
    {
        public static PlanJson Of(Plan plan)
        {
            var e = plan.Feasible ? plan.Evaluation : null;
            var block = e?.Block ?? plan.AskedBlock;
            return new PlanJson(
                plan.Feasible, e?.Throughput ?? 0, e?.Prefill?.TotalSeconds, e?.Decode?.TotalSeconds, block?.GpuBatchSize, block?.NumGpuBatches,
                (e?.Placement ?? plan.AskedPlacement)?.Percent, Bytes(e?.Gpu), Bytes(e?.Cpu), Bytes(e?.Disk));
        }

        private static long? Bytes(TierUse? use) => use is null ? null : (long)Math.Round(use.PeakBytes);
    }

    private static void Describe(TextWriter output, PlanProblem problem, string model, string hardwareFile, Plan plan)
    {
        var m = problem.Model;
        var b = problem.Budgets;
        output.WriteLine($"model: {model} ({m.Layers} layers, hidden {m.HiddenSize}, MLP {m.FfnSize}, {m.Heads} heads); " +
                         $"prompt {problem.PromptLen} + {problem.GenLen} new tokens; hardware {hardwareFile}");
        output.WriteLine($"budgets x alpha {F(problem.Alpha, 2)}: gpu {Gb(b.GpuBytes * problem.Alpha)} of {Gb(b.GpuBytes)}, " +
                         $"cpu {Gb(b.CpuBytes * problem.Alpha)} of {Gb(b.CpuBytes)}, disk {Gb(b.DiskBytes * problem.Alpha)} of {Gb(b.DiskBytes)}");
        if (plan.SearchResult is { } searched)
            output.WriteLine($"search: {(plan.Search == SearchKind.FlexLlmGen ? "flexgen" : "grid")}, {searched.ProgramsSolved} linear programs " +
                             $"in {F(searched.Elapsed.TotalSeconds, 2)} s");
        else
            output.WriteLine(plan.AskedPlacement is null ? $"evaluated: the best placement for block {plan.AskedBlock}" : $"evaluated: the given policy, block {plan.AskedBlock}");

        if (plan.Evaluation is not { Feasible: true } e)
        {
            output.WriteLine(plan.AskedBlock is null
                ? "infeasible: no block fits the budgets"
                : $"infeasible: block {plan.AskedBlock} {(plan.AskedPlacement is null ? "fits the budgets under no placement" : "with this placement exceeds a budget")}");
            return;
        }
        output.WriteLine($"policy: --gpu-batch-size {e.Block.GpuBatchSize} --num-gpu-batches {e.Block.NumGpuBatches} " +
                         $"--percent {string.Join(' ', e.Placement!.Percent.Select(p => F(p, 2)))} (block of {e.Block.BlockSize} sequences)");
        output.WriteLine($"prefill: {F(e.Prefill!.TotalSeconds, 3)} s ({F(e.Prefill.SecondsPerStep, 4)} s per layer), bound by {e.Prefill.BoundBy}");
        output.WriteLine($"decode:  {F(e.Decode!.TotalSeconds, 3)} s ({F(e.Decode.SecondsPerStep, 4)} s per layer and token), bound by {e.Decode.BoundBy}");
        output.WriteLine($"total:   {F(e.TotalSeconds, 3)} s for {e.Block.BlockSize * problem.GenLen} tokens: {F(e.Throughput, 3)} tok/s");
        output.WriteLine("peak memory (prefill / decode) vs budget x alpha:");
        foreach (var (name, use) in new[] { ("gpu", e.Gpu!), ("cpu", e.Cpu!), ("disk", e.Disk!) })
            output.WriteLine($"  {name,-4} {Gb(use.PrefillPeakBytes)} / {Gb(use.DecodePeakBytes)} of {Gb(use.BudgetBytes)}");
    }

    private static string F(double value, int digits) => value.ToString("F" + digits, CultureInfo.InvariantCulture);

    private static string Gb(double bytes) => $"{F(bytes / (1L << 30), 3)} GB";
}
