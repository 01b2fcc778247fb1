using FlexGen.Host.Cli;

// Restart once with what only takes effect at process start: MKL's Intel code paths on AMD CPUs (float32 matmuls ~30%
// faster), malloc on transparent huge pages (large fresh tensors faulted in 2 MiB at a time) and a short OpenMP spin
// (the compute's worker leaves the core to the pipeline between parts); see StartupEnvironment.
StartupEnvironment.ApplyAndRestart();

// SIGINT / SIGTERM: cancel cleanly (tiers freed, offload files deleted), then exit 130 / 143; see CliSignals.
using var signals = CliSignals.Register();
int code = await FlexGenCli.RunAsync(args, Console.Out, Console.Error, signals);
// Abandoned by a later signal: a step may still run on a tier actor's thread; end here rather than wait for it.
if (signals.Abandoned.IsCancellationRequested) Environment.Exit(code);
return code;
