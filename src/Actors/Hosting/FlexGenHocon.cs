namespace FlexGen.Actors.Hosting;

using System.Reflection;
using Akka.Configuration;
using FlexGen.Actors.Schedule;

/// <summary>The HOCON shipped in hocon/ (embedded in this assembly): dispatchers and pipeline defaults.</summary>
public static class FlexGenHocon
{
    private const string ResourceName = "hocon/flexgen.conf";

    private static readonly Lazy<Config> Loaded = new(Load);

    /// <summary>The embedded flexgen.conf.</summary>
    public static Config Config => Loaded.Value;

    /// <summary>The text of the embedded flexgen.conf (for hosts that assemble HOCON as strings).</summary>
    public static string Text
    {
        get
        {
            using var stream = typeof(FlexGenHocon).Assembly.GetManifestResourceStream(ResourceName)
                ?? throw new InvalidOperationException($"embedded resource '{ResourceName}' missing from {typeof(FlexGenHocon).Assembly.GetName().Name}");
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
    }

    /// <summary>The generation coordinator's pinned dispatcher (it blocks while loading weights and preparing runs).</summary>
    public const string CoordinatorDispatcher = "flexgen.dispatchers.generation-coordinator";

    /// <summary>The dispatcher id of a tier actor (each tier has its own pinned dispatcher).</summary>
    public static string DispatcherOf(PipelineActorKind tier) => $"flexgen.dispatchers.{tier.ActorName()}";

    private static Config Load() => ConfigurationFactory.ParseString(Text);
}
