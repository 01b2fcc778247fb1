namespace FlexGen.Actors.Actors;

/// <summary>
/// Pipeline tuning (defaults: hocon/flexgen.conf, flexgen.pipeline). Both values must be at least 1; a record
/// with another value cannot be made (<see cref="PipelineSettingsException"/>), so bad settings fail where they are read.
/// </summary>
/// <param name="MaxInFlightPerTier">Task parts handed to one tier actor and not yet answered (the dependencies and the
/// prefetch gate decide what may start; this, how many wait in its mailbox).</param>
/// <param name="PrefetchSteps">How many compute steps the loads may run ahead (1 = FlexGen's overlap).</param>
public sealed record PipelineSettings(int MaxInFlightPerTier = 8, int PrefetchSteps = 1)
{
    /// <summary>The HOCON key of <see cref="MaxInFlightPerTier"/>.</summary>
    public const string MaxInFlightPerTierKey = "flexgen.pipeline.max-in-flight-per-tier";

    /// <summary>The HOCON key of <see cref="PrefetchSteps"/>.</summary>
    public const string PrefetchStepsKey = "flexgen.pipeline.prefetch-steps";

    private readonly int _maxInFlightPerTier = AtLeastOne(MaxInFlightPerTierKey, MaxInFlightPerTier);
    private readonly int _prefetchSteps = AtLeastOne(PrefetchStepsKey, PrefetchSteps);

    public static PipelineSettings Default { get; } = new();

    public int MaxInFlightPerTier
    {
        get => _maxInFlightPerTier;
        init => _maxInFlightPerTier = AtLeastOne(MaxInFlightPerTierKey, value);
    }

    public int PrefetchSteps
    {
        get => _prefetchSteps;
        init => _prefetchSteps = AtLeastOne(PrefetchStepsKey, value);
    }

    /// <summary>flexgen.pipeline.max-in-flight-per-tier and prefetch-steps from <paramref name="config"/>, else the defaults.</summary>
    public static PipelineSettings FromConfig(Akka.Configuration.Config config) => new(
        config.GetInt(MaxInFlightPerTierKey, Default.MaxInFlightPerTier),
        config.GetInt(PrefetchStepsKey, Default.PrefetchSteps));

    private static int AtLeastOne(string key, int value) =>
        value >= 1 ? value : throw new PipelineSettingsException(key, value, "must be at least 1");
}

/// <summary>A pipeline setting (<see cref="PipelineSettings"/>) out of its range.</summary>
public sealed class PipelineSettingsException : ArgumentOutOfRangeException
{
    public PipelineSettingsException(string key, int value, string rule)
        : base(key, value, $"{key} = {value}: {rule}")
    {
        Key = key;
        Rule = rule;
    }

    /// <summary>The HOCON key of the setting.</summary>
    public string Key { get; }

    /// <summary>The rule the value breaks.</summary>
    public string Rule { get; }
}
