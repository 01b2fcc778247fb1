namespace FlexGen.Host.Cli;

using System.CommandLine;

/// <summary>Benchmarks of single parts (tiers, pipeline), added as their libraries provide them.</summary>
public static class ExtraCommands
{
    public static IEnumerable<Command> Build() => [];
}
