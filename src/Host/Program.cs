using FlexGen.Host.Cli;

using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    // First Ctrl+C: cancel cleanly (tiers freed, offload files deleted); a second one ends the process.
    if (cancellation.IsCancellationRequested) return;
    e.Cancel = true;
    cancellation.Cancel();
};
return await FlexGenCli.RunAsync(args, Console.Out, Console.Error, cancellation.Token);
