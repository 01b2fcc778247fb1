namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Layers;

/// <summary>The one per-request description of how to generate: checked when made, the message naming the field.</summary>
public class GenerationSettingsTests
{
    [Fact]
    public void New_settings_should_be_greedy_and_never_stop()
    {
        var settings = new GenerationSettings(4);

        Assert.Equal(4, settings.GenLen);
        Assert.Same(SamplingOptions.Greedy, settings.Sampling);
        Assert.Null(settings.StopTokenId);
        Assert.Equal(settings, new GenerationSettings(4) { Sampling = new SamplingOptions() }); // equal settings share GPU batches
    }

    [Fact]
    public void A_broken_rule_should_name_the_field()
    {
        var genLen = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationSettings(0));
        Assert.Equal(nameof(GenerationSettings.GenLen), genLen.ParamName);
        Assert.Contains("GenerationSettings.GenLen must be >= 1", genLen.Message);

        var again = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationSettings(3) with { GenLen = -1 });
        Assert.Equal(nameof(GenerationSettings.GenLen), again.ParamName);

        var stop = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationSettings(3) { StopTokenId = -2 });
        Assert.Equal(nameof(GenerationSettings.StopTokenId), stop.ParamName);
        Assert.Contains("GenerationSettings.StopTokenId", stop.Message);

        var sampling = Assert.Throws<ArgumentNullException>(() => new GenerationSettings(3) { Sampling = null! });
        Assert.Equal(nameof(GenerationSettings.Sampling), sampling.ParamName);

        var temperature = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationSettings(3) { Sampling = new SamplingOptions(true, -1) });
        Assert.Equal("temperature", temperature.ParamName);
    }
}
