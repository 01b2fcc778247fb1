namespace FlexGen.Host.Hosting;

using Akka.Actor;
using Akka.Hosting;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Pipeline;
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
}
