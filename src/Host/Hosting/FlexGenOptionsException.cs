namespace FlexGen.Host.Hosting;

using FlexGen.Tensors.Policies;

/// <summary>
/// A <see cref="FlexGenOptions"/> value that breaks a rule: the option's configuration key (<see cref="FlexGenOptionKeys"/>),
/// the value as given and the rule. A front end names the option its own way: <see cref="Describe"/> with its name
/// (the CLI passes its flag).
/// </summary>
public sealed class FlexGenOptionsException(string key, string? value, string rule, Exception? inner = null)
    : ArgumentException(null, key, inner)
{
    /// <summary>The option's configuration key, e.g. <c>FlexGen:ComputeDtype</c>.</summary>
    public string Key { get; } = key;

    /// <summary>The value as given; null when the rule already quotes it (a policy rule names field and value).</summary>
    public string? Value { get; } = value;

    public string Rule { get; } = rule;

    public override string Message => Describe(Key);

    /// <summary>"name value: rule", the option named by <paramref name="optionName"/>.</summary>
    public string Describe(string optionName) => Value is null ? $"{optionName}: {Rule}" : $"{optionName} {Value}: {Rule}";

    /// <summary>A policy rule broken, named by its option key (the percent fields all come from <c>FlexGen:Policy:Percent</c>).</summary>
    internal static FlexGenOptionsException FromPolicy(PolicyValidationException ex) =>
        new(FlexGenOptionKeys.OfPolicyField(ex.Field), null, ex.Message, ex);
}

/// <summary>The configuration keys of <see cref="FlexGenOptions"/>, as <c>IConfiguration</c> spells them.</summary>
public static class FlexGenOptionKeys
{
    private const string Section = FlexGenOptions.SectionName + ":";
    private const string PolicySection = Section + nameof(FlexGenOptions.Policy) + ":";

    public const string Model = Section + nameof(FlexGenOptions.Model);
    public const string Path = Section + nameof(FlexGenOptions.Path);
    public const string OffloadDir = Section + nameof(FlexGenOptions.OffloadDir);
    public const string ComputeDtype = Section + nameof(FlexGenOptions.ComputeDtype);
    public const string GpuMem = Section + nameof(FlexGenOptions.GpuMem);
    public const string CpuMem = Section + nameof(FlexGenOptions.CpuMem);
    public const string DiskMem = Section + nameof(FlexGenOptions.DiskMem);
    public const string ClusterListen = Section + nameof(FlexGenOptions.Cluster) + ":" + nameof(StageClusterOptions.Listen);
    public const string ClusterSeed = Section + nameof(FlexGenOptions.Cluster) + ":" + nameof(StageClusterOptions.Seed);
    public const string ClusterStages = Section + nameof(FlexGenOptions.Cluster) + ":" + nameof(StageClusterOptions.Stages);
    public const string ClusterMaxFrameMb = Section + nameof(FlexGenOptions.Cluster) + ":" + nameof(StageClusterOptions.MaxFrameMb);
    public const string ComputeThreads = Section + nameof(FlexGenOptions.ComputeThreads);
    public const string IoThreads = Section + nameof(FlexGenOptions.IoThreads);
    public const string GpuBatchSize = PolicySection + nameof(PolicyOptions.GpuBatchSize);
    public const string NumGpuBatches = PolicySection + nameof(PolicyOptions.NumGpuBatches);
    public const string Percent = PolicySection + nameof(PolicyOptions.Percent);
    public const string AttnSparsity = PolicySection + nameof(PolicyOptions.AttnSparsity);
    public const string Hardware = Section + nameof(FlexGenOptions.Hardware);
    public const string PlanPromptLen = PolicySection + nameof(PolicyOptions.PlanPromptLen);
    public const string PlanGenLen = PolicySection + nameof(PolicyOptions.PlanGenLen);
    public const string PlanMaxBlockSize = PolicySection + nameof(PolicyOptions.PlanMaxBlockSize);

    /// <summary>The keys a <see cref="FlexGenOptionsException"/> names (the other options are switches, HOCON or a log level).</summary>
    public static IReadOnlyList<string> Checked { get; } =
        [Model, Path, OffloadDir, ComputeDtype, GpuMem, CpuMem, DiskMem, ComputeThreads, IoThreads, GpuBatchSize, NumGpuBatches, Percent, AttnSparsity, Hardware];

    // PlanPromptLen, PlanGenLen and PlanMaxBlockSize are named too, but the CLI derives them from its run, never from a flag.

    /// <summary>
    /// The option key of a <see cref="PolicyValidationException.Field"/> ("Policy.WGpuPercent" comes from the
    /// percent list); a field no option sets keeps its name under the policy section.
    /// </summary>
    public static string OfPolicyField(string field) => field.Split('.').Last() switch
    {
        var f when f.EndsWith(nameof(PolicyOptions.Percent), StringComparison.Ordinal) => Percent,
        var f => PolicySection + f,
    };
}
