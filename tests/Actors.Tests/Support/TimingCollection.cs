namespace FlexGen.Actors.Tests.Support;

/// <summary>Tests that compare wall times run alone, not beside other test classes.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingCollection
{
    public const string Name = "timing";
}
