namespace FlexGen.Host.Hosting;

using System.Globalization;
using Akka.Actor;
using Akka.Cluster.Hosting;
using Akka.Cluster.Hosting.SBR;
using Akka.Hosting;
using Akka.Remote.Hosting;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Stages;
using FlexGen.Host.Generation;
using FlexGen.Host.Text;
using FlexGen.Tensors.Policies;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

/// <summary>
/// Embeds FlexGen in a Microsoft.Extensions.Hosting application:
/// <code>
/// builder.Services.AddFlexGen(builder.Configuration);           // options from the "FlexGen" section
/// // or, with your own actor system:
/// var flexGen = FlexGenSetup.Create(options);
/// builder.Services.AddFlexGenService(flexGen);
/// builder.Services.AddAkka("flexgen", (akka, sp) => akka.AddFlexGen(flexGen));
/// </code>
/// then inject <see cref="IGenerationService"/>.
/// </summary>
public static class FlexGenHostingExtensions
{
    /// <summary>Binds <see cref="FlexGenOptions"/> from <paramref name="configuration"/>'s "FlexGen" section and adds everything.</summary>
    public static IServiceCollection AddFlexGen(this IServiceCollection services, IConfiguration configuration,
        Action<FlexGenOptions>? configure = null)
    {
        var options = new FlexGenOptions();
        configuration.GetSection(FlexGenOptions.SectionName).Bind(options);
        configure?.Invoke(options);
        return services.AddFlexGen(options);
    }

    /// <summary>Adds the actor system "flexgen" with the coordinator and tier actors, and the generation service.</summary>
    public static IServiceCollection AddFlexGen(this IServiceCollection services, FlexGenOptions options)
    {
        var setup = FlexGenSetup.Create(options);
        services.AddFlexGenService(setup);
        services.AddAkka("flexgen", (akka, _) => akka.AddFlexGen(setup));
        return services;
    }

    /// <summary>Registers <see cref="IGenerationService"/> (and the engine it drives) for a setup.</summary>
    public static IServiceCollection AddFlexGenService(this IServiceCollection services, FlexGenSetup setup)
    {
        services.AddSingleton(setup);
        services.AddSingleton(setup.Model);
        services.AddSingleton<IGenerationEngine>(sp => new CoordinatorEngine(sp, setup.Model.Config, setup.Policy));
        services.AddSingleton<GenerationService>(sp => new GenerationService(
            sp.GetRequiredService<IGenerationEngine>(), setup.Tokenizer, TimeSpan.FromMilliseconds(setup.Options.BatchWindowMs)));
        services.AddSingleton<IGenerationService>(sp => sp.GetRequiredService<GenerationService>());
        return services;
    }

    /// <summary>
    /// Adds FlexGen's HOCON (dispatchers: one pinned thread per tier actor) and starts the coordinator, which owns
    /// the tier actors and the model. Registered as <c>IRequiredActor&lt;GenerationCoordinator&gt;</c>. When
    /// CoordinatedShutdown has terminated the system, the offload folder FlexGen created is deleted.
    /// </summary>
    public static AkkaConfigurationBuilder AddFlexGen(this AkkaConfigurationBuilder builder, FlexGenSetup setup,
        Func<Policy, CancellationToken, IPipelineBackend>? backendFactory = null)
    {
        builder.AddHocon(FlexGenHocon.Config, HoconAddMode.Append);
        if (!string.IsNullOrWhiteSpace(setup.Options.Hocon)) builder.AddHocon(setup.Options.Hocon, HoconAddMode.Prepend);
        if (setup.Options.AkkaLogLevel is { } level)
            builder.AddHocon($"akka.loglevel = {level}\nakka.stdout-loglevel = {level}", HoconAddMode.Prepend);
        if (setup.Options.Cluster is { } cluster)
        {
            return builder.AddFlexGenStage(setup, cluster);
        }

        builder.WithActors((system, registry) =>
        {
            var factory = backendFactory ?? setup.CreateBackend;
            // Pipeline knobs (flexgen.pipeline) come from the system's HOCON: FlexGen:Hocon in front of hocon/flexgen.conf.
            var coordinator = system.ActorOf(GenerationCoordinator.Props(setup.Policy, factory), "generation-coordinator");
            registry.Register<GenerationCoordinator>(coordinator);
            // After the system has terminated (CoordinatedShutdown's last phase): every actor has stopped and the backend has
            // freed its tiers and files. A task in that phase would run beside the actors' stopping.
            system.RegisterOnTermination(setup.DeleteOwnedOffloadDir);
        });
        return builder;
    }

    /// <summary>The cluster role of the coordinating node (beside the stage role every node has).</summary>
    public const string CoordinatorRole = "flexgen-coordinator";

    /// <summary>
    /// This node as a stage of a pipeline over several nodes (Akka.Remote and Akka.Cluster through their hosting
    /// extensions, flexgen-cluster.conf for the rest): a <see cref="StageActor"/> under the setup's policy, and on the
    /// coordinating node (no seed) the <see cref="PipelineCoordinator"/>, registered as the generation coordinator (it
    /// answers the same protocol), with frames sized for <see cref="StageClusterOptions.MaxPromptLen"/> prompts.
    /// </summary>
    /// <exception cref="FlexGenOptionsException">An address that is not host:port, or stages below 2 (names the key).</exception>
    private static AkkaConfigurationBuilder AddFlexGenStage(this AkkaConfigurationBuilder builder, FlexGenSetup setup, StageClusterOptions cluster)
    {
        var (host, port) = Endpoint(FlexGenOptionKeys.ClusterListen, cluster.Listen);
        bool coordinates = cluster.Seed is null;
        if (coordinates && cluster.Stages < 2)
            throw new FlexGenOptionsException(FlexGenOptionKeys.ClusterStages, cluster.Stages.ToString(CultureInfo.InvariantCulture), "a pipeline needs at least 2 stages.");
        var layers = setup.Model.Config.Layers(setup.Policy.SepLayer).Count;
        long frame = coordinates
            ? PipelinePlanner.FrameBytesFor(PipelinePlanner.LargestMessageBytes(setup.Model.Config, setup.Policy.GpuBatchSize, setup.Policy.NumGpuBatches, layers,
                cluster.MaxPromptLen, cluster.MaxGenLen))
            : cluster.MaxFrameMb is > 0 and <= PipelinePlanner.FrameLimitBytes / (1 << 20)
                ? (long)(cluster.MaxFrameMb * (1 << 20))
                : throw new FlexGenOptionsException(FlexGenOptionKeys.ClusterMaxFrameMb, cluster.MaxFrameMb.ToString(CultureInfo.InvariantCulture),
                    $"must be above 0 and at most {PipelinePlanner.FrameLimitBytes >> 20} MiB.");
        string seed = coordinates ? $"{host}:{port}" : cluster.Seed!;
        var (seedHost, seedPort) = Endpoint(coordinates ? FlexGenOptionKeys.ClusterListen : FlexGenOptionKeys.ClusterSeed, seed);
        if (coordinates && port == 0)
            throw new FlexGenOptionsException(FlexGenOptionKeys.ClusterListen, cluster.Listen, "the coordinating node is the seed: give it a fixed port.");
        // flexgen-cluster.conf behind flexgen.conf: serializer bindings, failure detector, downing; the options below win.
        builder.AddHocon(FlexGenHocon.ClusterConfig, HoconAddMode.Append);
        builder.WithRemoting(new RemoteOptions
        {
            HostName = host,
            Port = port,
            MaxFrameSize = checked((int)frame),
            SendBufferSize = checked((int)frame),
            ReceiveBufferSize = checked((int)frame),
        });
        builder.WithClustering(new ClusterOptions
        {
            Roles = coordinates ? [StagePipelineSettings.StageRole, CoordinatorRole] : [StagePipelineSettings.StageRole],
            SeedNodes = [$"akka.tcp://flexgen@{seedHost}:{seedPort}"],
            // The coordinating node forms the cluster first, so it is the oldest: it survives a worker's death, and
            // workers cut off from it down themselves (and rejoin the seed).
            SplitBrainResolver = new KeepOldestOption { DownIfAlone = false },
        });
        builder.WithActors((system, registry) =>
        {
            long? capacity = setup.Budgets.Gpu is null || setup.Budgets.Cpu is null || setup.Budgets.Disk is null
                ? null
                : setup.Budgets.Gpu.Bytes + setup.Budgets.Cpu.Bytes + setup.Budgets.Disk.Bytes;
            var stage = system.ActorOf(StageActor.Props(setup.Policy, capacity, setup.CreateStageBackend), StageActor.Name);
            if (coordinates)
            {
                var model = new StageModel(setup.Model.Location.Folder ?? setup.Model.Config.Name,
                    setup.Model.Location.Folder is null ? setup.Options.Path ?? ModelResolver.DummyPath : null);
                var settings = new StagePipelineSettings(cluster.Stages, TimeSpan.FromSeconds(cluster.StageWaitSeconds), model, setup.Model.Config,
                    cluster.MaxPromptLen, cluster.MaxGenLen);
                registry.Register<GenerationCoordinator>(system.ActorOf(PipelineCoordinator.Props(settings, stage), "flexgen-pipeline"));
            }

            system.RegisterOnTermination(setup.DeleteOwnedOffloadDir);
        });
        return builder;
    }

    private static (string Host, int Port) Endpoint(string key, string value)
    {
        int colon = value.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(value[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            throw new FlexGenOptionsException(key, value, "expected host:port, e.g. 127.0.0.1:25520.");
        return (value[..colon], port);
    }
}
