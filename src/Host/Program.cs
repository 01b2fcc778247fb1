using FlexGen.Host.Cli;

// SIGINT / SIGTERM: cancel cleanly (tiers freed, offload files deleted), then exit 130 / 143; see CliSignals.
using var signals = CliSignals.Register();
return await FlexGenCli.RunAsync(args, Console.Out, Console.Error, signals);
