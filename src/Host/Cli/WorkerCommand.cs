namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Host.Hosting;

/// <summary>
/// <c>flexgen worker</c>: one stage node of a pipeline over several nodes. Joins the cluster the coordinating node
/// (<c>flexgen generate --cluster-listen</c>) forms at --seed, loads the layers that node's plan gives it (from the model it
/// names) under this worker's own policy, budgets and offload folder, and runs its part of each block. When the
/// coordinating node leaves (or is gone), the worker frees its layers and joins the next one at the same seed; SIGTERM or
/// Ctrl-C leaves the cluster gracefully and exits.
/// </summary>
public static class WorkerCommand
{
    public static Command Build()
    {
        var flags = new GenerationFlags(GenerateCommand.DefaultGenLen, defaultTrace: null);
        var listen = new Option<string>("--listen") { Description = "host:port this worker listens on (reachable from the other nodes).", Required = true };
        var seed = new Option<string>("--seed") { Description = "host:port of the coordinating node (its --cluster-listen).", Required = true };
        var maxFrame = new Option<double>("--max-frame-mb")
        {
            Description = "The largest message this worker accepts (MiB): a plan whose hidden states are larger is refused.",
            DefaultValueFactory = _ => new StageClusterOptions().MaxFrameMb,
        };
        var command = new Command("worker", "Serve as a pipeline stage of a cluster: `flexgen generate --cluster-listen HOST:PORT --stages N` plans and uses the workers.");
        flags.Policy.AddTo(command);
        foreach (var o in new Option[] { flags.ComputeDtype, flags.GpuMem, flags.CpuMem, flags.DiskMem, listen, seed, maxFrame }) command.Options.Add(o);

        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            var options = new FlexGenOptions
            {
                OffloadDir = parse.GetValue(flags.Policy.OffloadDir),
                ComputeDtype = parse.GetValue(flags.ComputeDtype),
                GpuMem = parse.GetValue(flags.GpuMem),
                CpuMem = parse.GetValue(flags.CpuMem),
                DiskMem = parse.GetValue(flags.DiskMem),
                Policy = flags.Policy.ToOptions(parse),
                Cluster = new StageClusterOptions { Listen = parse.GetValue(listen)!, Seed = parse.GetValue(seed)!, MaxFrameMb = parse.GetValue(maxFrame) },
            };
            _ = options.Policy.ToPolicy();
            while (!cancellation.IsCancellationRequested)
            {
                // Each session is a fresh cluster membership: a node that has left a cluster cannot join the next one.
                int code = await FlexGenCli.RunWithRuntimeAsync(parse, console, options, model: null, geometry: null, async runtime =>
                {
                    console.Error.WriteLine($"worker: listening on {options.Cluster.Listen}, joining {options.Cluster.Seed} (policy percent {string.Join(' ', runtime.Policy.Percent)}, gpu-batch-size {runtime.Policy.GpuBatchSize} x {runtime.Policy.NumGpuBatches}, compute {runtime.ComputeDtype} on {runtime.Device})");
                    try
                    {
                        string ended = await runtime.WhenClusterSessionEndsAsync(cancellation);
                        console.Error.WriteLine($"worker: {ended}; freeing this stage and joining {options.Cluster.Seed} again");
                    }
                    catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
                    {
                    }
                    return ExitCodes.Success;
                }, cancellation);
                if (code != ExitCodes.Success) return code;
            }

            console.Error.WriteLine("worker: left the cluster");
            return ExitCodes.Success;
        });
        return command;
    }
}
