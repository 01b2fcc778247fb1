using FlexGen.Host.Cli;

// On AMD CPUs: restart once with MKL's Intel code paths preloaded (float32 matmuls ~30% faster); see MklCpuDispatch.
MklCpuDispatch.PreloadAndRestart();

// SIGINT / SIGTERM: cancel cleanly (tiers freed, offload files deleted), then exit 130 / 143; see CliSignals.
using var signals = CliSignals.Register();
int code = await FlexGenCli.RunAsync(args, Console.Out, Console.Error, signals);
// Abandoned by a later signal: a step may still run on a tier actor's thread; end here rather than wait for it.
if (signals.Abandoned.IsCancellationRequested) Environment.Exit(code);
return code;
