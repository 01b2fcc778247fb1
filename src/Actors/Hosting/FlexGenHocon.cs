namespace FlexGen.Actors.Hosting;

using System.Reflection;
using Akka.Configuration;
using FlexGen.Actors.Schedule;

/// <summary>
/// The HOCON shipped in hocon/ (embedded in this assembly): dispatchers and pipeline defaults (flexgen.conf), and what a
/// node of a pipeline over several nodes adds (flexgen-cluster.conf).
/// </summary>
public static class FlexGenHocon
{
    private const string ResourceName = "hocon/flexgen.conf";
    private const string ClusterResourceName = "hocon/flexgen-cluster.conf";

    private static readonly Lazy<Config> Loaded = new(() => ConfigurationFactory.ParseString(Text));
    private static readonly Lazy<Config> ClusterLoaded = new(() => ConfigurationFactory.ParseString(ClusterText));

    /// <summary>The embedded flexgen.conf.</summary>
    public static Config Config => Loaded.Value;

    /// <summary>The text of the embedded flexgen.conf (for hosts that assemble HOCON as strings).</summary>
    public static string Text => Read(ResourceName);

    /// <summary>The embedded flexgen-cluster.conf: cluster provider, stage serializer bindings, failure detector, downing.</summary>
    public static Config ClusterConfig => ClusterLoaded.Value;

    /// <summary>The text of the embedded flexgen-cluster.conf.</summary>
    public static string ClusterText => Read(ClusterResourceName);

    /// <summary>The generation coordinator's pinned dispatcher (it blocks while loading weights and preparing runs).</summary>
    public const string CoordinatorDispatcher = "flexgen.dispatchers.generation-coordinator";

    /// <summary>The dispatcher id of a tier actor (each tier has its own pinned dispatcher).</summary>
    public static string DispatcherOf(PipelineActorKind tier) => $"flexgen.dispatchers.{tier.ActorName()}";

    private static string Read(string resource)
    {
        using var stream = typeof(FlexGenHocon).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"embedded resource '{resource}' missing from {typeof(FlexGenHocon).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
