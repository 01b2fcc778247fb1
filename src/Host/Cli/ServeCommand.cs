namespace FlexGen.Host.Cli;

using System.CommandLine;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Host.Serving;
using FlexGen.Tensors.Layers;
using Microsoft.Extensions.DependencyInjection;

/// <summary>
/// <c>flexgen serve</c>: OpenAI's completions API over HTTP (<see cref="CompletionServer"/>) with the same model and
/// policy flags as generate. Listens at once (503 until the weights are placed); Ctrl-C drains and exits.
/// </summary>
public static class ServeCommand
{
    public static Command Build()
    {
        var flags = new GenerationFlags(GenerateCommand.DefaultGenLen, null);
        var host = new Option<string>("--host") { Description = "Address to listen on.", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on (0: a free one, printed).", DefaultValueFactory = _ => 8080 };
        var maxWait = new Option<int>("--max-wait-ms")
        {
            Description = "How long a block waits for more requests after its first before it starts (it starts at once when full).",
            DefaultValueFactory = _ => 20,
        };
        var maxQueue = new Option<int>("--max-queue")
        {
            Description = "Sequences (prompts) waiting or running at most; a request past it gets 429.",
            DefaultValueFactory = _ => 256,
        };
        var command = new Command("serve",
            "Serve OpenAI-style completions over HTTP (POST /v1/completions, GET /v1/models, /health, /metrics); concurrent requests are packed into blocks.");
        flags.AddModelAndPolicyTo(command);
        foreach (var o in new Option[] { host, port, maxWait, maxQueue }) command.Options.Add(o);

        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            var options = flags.ToOptions(parse);
            int portValue = parse.GetValue(port), wait = parse.GetValue(maxWait), queue = parse.GetValue(maxQueue);
            if (portValue is < 0 or > 65535) throw new UsageException($"--port {portValue}: must be in [0, 65535].");
            if (wait < 0) throw new UsageException($"--max-wait-ms {wait}: must be >= 0.");
            if (queue < 1) throw new UsageException($"--max-queue {queue}: must be >= 1.");
            string hostValue = parse.GetValue(host) ?? "127.0.0.1";
            options.BatchWindowMs = wait;

            var model = ModelResolver.Resolve(options.Model, options.Path);
            var tokenizer = FlexGenSetup.LoadTokenizer(model);
            var names = new[] { options.Model, model.Location.Folder is { } f ? Path.GetFileName(f) : null }.OfType<string>();
            CompletionServer server;
            try
            {
                server = await CompletionServer.StartAsync(
                    new ServeOptions { Host = hostValue, Port = portValue, MaxQueue = queue }, model.Config, tokenizer, names, cancellation);
            }
            catch (IOException ex)
            {
                throw new UsageException($"--host {hostValue} --port {portValue}: cannot listen ({ex.Message}).");
            }
            await using var _ = server;
            console.Error.WriteLine($"serve: listening on {server.Address} (503 until the weights are placed)");
            int code = await FlexGenCli.RunWithRuntimeAsync(parse, console, options, model, geometry: null, async runtime =>
            {
                console.Output.WriteLine(GenerationFlags.Describe(runtime));
                var service = runtime.Services.GetRequiredService<GenerationService>();
                // One token places the weights in their tiers: ready only then.
                await service.GenerateAsync([model.Config.BosTokenId], new GenerationSettings(1), cancellation);
                server.MarkReady(service);
                console.Output.WriteLine(
                    $"serving {server.ModelId} on {server.Address} (POST /v1/completions, GET /v1/models, /health, /metrics; " +
                    $"blocks of {runtime.Policy.GpuBatchSize * runtime.Policy.NumGpuBatches}, --max-wait-ms {wait}, --max-queue {queue}); Ctrl-C drains and exits");
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellation);
                }
                catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
                {
                }
                console.Error.WriteLine($"serve: draining ({server.QueueLength} sequences waiting or running; new requests get 503)");
                await server.DrainAsync(console.Abandon);
                await server.DisposeAsync();
                return ExitCodes.Success;
            }, cancellation);
            if (code == ExitCodes.Success) console.Error.WriteLine("serve: stopped");
            return code;
        });
        return command;
    }
}
