// A host service that embeds FlexGen: options from appsettings.json ("FlexGen" section), the actor system and
// its coordinator started by Akka.Hosting, and IGenerationService injected into a worker that sends concurrent
// requests (the service packs them into GPU batches). Ctrl+C or the end of the work stops the host through
// CoordinatedShutdown, which frees every tier and deletes the offload folder.
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Layers;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

// appsettings.json sits next to the binary, wherever the app is started from.
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddFlexGen(builder.Configuration);
builder.Services.AddHostedService<PromptWorker>();
await builder.Build().RunAsync();

/// <summary>Sends a few prompts at once and logs each answer, then stops the application.</summary>
internal sealed class PromptWorker(IGenerationService generation, IHostApplicationLifetime lifetime, ILogger<PromptWorker> log)
    : BackgroundService
{
    // Token ids of the opt-tiny fixture's prompts (the bundled model is random: its "text" is noise).
    private static readonly long[][] Prompts =
    [
        [11835, 28914, 10183, 33000, 8950, 1362, 23625, 25467, 22761, 32535, 27295, 13527],
        [48334, 45292, 20619, 8581, 26910, 49802, 3121, 3451],
        [13224, 27308, 46723, 12249],
        [37318, 16543, 116, 44128, 18464, 1480, 18450, 33533, 3205],
    ];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            var settings = new GenerationSettings(8);
            var answers = await Task.WhenAll(Prompts.Select(p => generation.GenerateAsync(p, settings, stoppingToken)));
            foreach (var (answer, i) in answers.Select((a, i) => (a, i)))
                log.LogInformation("prompt {Index}: {Tokens} (block of {Sequences} sequences, {Seconds:F3} s)",
                    i, string.Join(' ', answer.OutputIds), answer.Block.Sequences, answer.Block.Total.TotalSeconds);
        }
        finally
        {
            lifetime.StopApplication();
        }
    }
}
