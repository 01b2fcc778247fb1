namespace FlexGen.Host.Tests;

using Akka.Hosting;
using FlexGen.Actors.Actors;
using FlexGen.Host.Generation;
using FlexGen.Tensors.Layers;
using FlexGen.Host.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

/// <summary>The embedding: a real Microsoft.Extensions.Hosting host with Akka.Hosting and FlexGen inside.</summary>
public class GenerationServiceTests
{
    private static IHost BuildHost(Dictionary<string, string?> settings)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddFlexGen(builder.Configuration, o => o.AkkaLogLevel = "WARNING");
        return builder.Build();
    }

    private static Dictionary<string, string?> Settings(string offloadDir) => new()
    {
        ["FlexGen:Model"] = TestPaths.BundledModel,
        ["FlexGen:ComputeDtype"] = "float32",
        ["FlexGen:OffloadDir"] = offloadDir,
        ["FlexGen:BatchWindowMs"] = "50",
        ["FlexGen:Hocon"] = "flexgen.pipeline.prefetch-steps = 3",
        ["FlexGen:Policy:GpuBatchSize"] = "4",
        ["FlexGen:Policy:NumGpuBatches"] = "2",
        ["FlexGen:Policy:Percent:0"] = "0",
        ["FlexGen:Policy:Percent:1"] = "100",
        ["FlexGen:Policy:Percent:2"] = "0",
        ["FlexGen:Policy:Percent:3"] = "100",
        ["FlexGen:Policy:Percent:4"] = "100",
        ["FlexGen:Policy:Percent:5"] = "0",
    };

    [Fact]
    public async Task Concurrent_requests_should_each_get_their_own_Hugging_Face_tokens()
    {
        using var folder = new TempFolder();
        using var host = BuildHost(Settings(folder.File("offload")));
        await host.StartAsync();
        try
        {
            var setup = host.Services.GetRequiredService<FlexGenSetup>();
            Assert.Equal(0, setup.Policy.WGpuPercent);
            Assert.Equal(2, setup.Policy.NumGpuBatches);
            var coordinator = await host.Services.GetRequiredService<IRequiredActor<GenerationCoordinator>>().GetAsync();
            Assert.NotNull(coordinator);
            var pipeline = PipelineSettings.FromConfig(host.Services.GetRequiredService<Akka.Actor.ActorSystem>().Settings.Config);
            Assert.Equal(3, pipeline.PrefetchSteps); // FlexGen:Hocon in front of hocon/flexgen.conf

            var service = host.Services.GetRequiredService<IGenerationService>();
            var settings = new GenerationSettings(10);
            var tasks = Enumerable.Range(0, 8).Select(r => Task.Run(() => service.GenerateAsync(Fixture.UnpaddedPrompt(r), settings))).ToArray();
            var results = await Task.WhenAll(tasks);

            var hf = Fixture.HfTokens;
            for (int r = 0; r < 8; r++) Assert.Equal(Fixture.Row(hf, r), results[r].OutputIds);
            // Packed: the eight requests shared engine runs (blocks of up to 8 sequences).
            Assert.All(results, s => Assert.True(s.Block.Sequences <= 8));
            Assert.True(results.Select(s => s.Block).Distinct().Count() < 8, "requests were not packed into shared blocks");
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>A hosted service that takes the generation service in its constructor, as applications do.</summary>
    private sealed class ConsumerService(IGenerationService generation, TaskCompletionSource<GeneratedSequence> done) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            try { done.TrySetResult(await generation.GenerateAsync(Fixture.UnpaddedPrompt(3), new GenerationSettings(10), stoppingToken)); }
            catch (Exception ex) { done.TrySetException(ex); }
        }
    }

    [Fact]
    public async Task A_hosted_service_constructed_before_the_actor_system_starts_should_get_its_tokens()
    {
        using var folder = new TempFolder();
        var done = new TaskCompletionSource<GeneratedSequence>(TaskCreationOptions.RunContinuationsAsynchronously);
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(Settings(folder.File("offload")));
        builder.Services.AddHostedService(sp => new ConsumerService(sp.GetRequiredService<IGenerationService>(), done)); // before AddFlexGen
        builder.Services.AddFlexGen(builder.Configuration, o => o.AkkaLogLevel = "WARNING");
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var answer = await done.Task.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(Fixture.Row(Fixture.HfTokens, 3), answer.OutputIds);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task A_request_cancelled_while_queued_should_end_cancelled_without_running()
    {
        using var folder = new TempFolder();
        using var host = BuildHost(Settings(folder.File("offload")));
        await host.StartAsync();
        try
        {
            var service = host.Services.GetRequiredService<IGenerationService>();
            using var cancel = new CancellationTokenSource();
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => service.GenerateAsync(Fixture.UnpaddedPrompt(0), null, cancel.Token));

            var after = await service.GenerateAsync(Fixture.UnpaddedPrompt(1), new GenerationSettings(10));
            Assert.Equal(Fixture.Row(Fixture.HfTokens, 1), after.OutputIds);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task Cancelling_a_running_request_should_stop_it_and_leave_the_service_working()
    {
        using var folder = new TempFolder();
        var settings = Settings(folder.File("offload"));
        settings["FlexGen:Policy:Percent:2"] = "0";   // cache on disk: the run has offload files to clean up
        settings["FlexGen:Policy:Percent:3"] = "0";
        using var host = BuildHost(settings);
        await host.StartAsync();
        try
        {
            var service = host.Services.GetRequiredService<IGenerationService>();
            using var cancel = new CancellationTokenSource();
            var running = service.GenerateAsync(Fixture.UnpaddedPrompt(0), new GenerationSettings(1000), cancel.Token);
            await Task.Delay(500);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"cancellation took {clock.Elapsed}");

            var after = await service.GenerateAsync(Fixture.UnpaddedPrompt(2), new GenerationSettings(10));
            Assert.Equal(Fixture.Row(Fixture.HfTokens, 2), after.OutputIds);
        }
        finally
        {
            await host.StopAsync();
        }
        Assert.Empty(Directory.Exists(folder.File("offload"))
            ? Directory.GetFiles(folder.File("offload"), "*", SearchOption.AllDirectories)
            : []);
    }

    [Fact]
    public async Task Bad_prompts_should_be_refused_naming_the_token_and_the_limit()
    {
        using var folder = new TempFolder();
        using var host = BuildHost(Settings(folder.File("offload")));
        await host.StartAsync();
        try
        {
            var service = host.Services.GetRequiredService<IGenerationService>();
            var outOfVocab = await Assert.ThrowsAsync<ArgumentException>(() => service.GenerateAsync([5, 60000]));
            Assert.Contains("60000", outOfVocab.Message);
            var tooLong = await Assert.ThrowsAsync<ArgumentException>(() =>
                service.GenerateAsync(Enumerable.Repeat(5L, 2040).ToArray(), new GenerationSettings(10)));
            Assert.Contains("max_seq_len 2048", tooLong.Message);
            var text = await Assert.ThrowsAsync<InvalidOperationException>(() => service.GenerateAsync("hello"));
            Assert.Contains("vocab.json", text.Message);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task Stopping_the_host_should_delete_the_offload_folder_FlexGen_created()
    {
        var settings = Settings(offloadDir: "");
        settings.Remove("FlexGen:OffloadDir");
        using var host = BuildHost(settings);
        await host.StartAsync();
        var setup = host.Services.GetRequiredService<FlexGenSetup>();
        var service = host.Services.GetRequiredService<IGenerationService>();
        await service.GenerateAsync(Fixture.UnpaddedPrompt(0), new GenerationSettings(2));
        Directory.CreateDirectory(setup.OffloadDir);
        File.WriteAllText(Path.Combine(setup.OffloadDir, "leftover"), "x");

        await host.StopAsync();

        Assert.False(Directory.Exists(setup.OffloadDir), setup.OffloadDir);
    }
}
