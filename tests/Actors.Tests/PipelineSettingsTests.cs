namespace FlexGen.Actors.Tests;

using Akka.Actor;
using Akka.Configuration;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Tests.Support;

public class PipelineSettingsTests
{
    [Theory]
    [InlineData(0, 1, PipelineSettings.MaxInFlightPerTierKey, 0)]
    [InlineData(-3, 1, PipelineSettings.MaxInFlightPerTierKey, -3)]
    [InlineData(2, 0, PipelineSettings.PrefetchStepsKey, 0)]
    [InlineData(2, -1, PipelineSettings.PrefetchStepsKey, -1)]
    public void PipelineOptions_should_reject_a_value_below_one_naming_the_hocon_key_value_and_rule(int maxInFlight, int prefetch, string key, int value)
    {
        var error = Assert.Throws<PipelineSettingsException>(() => new PipelineSettings(maxInFlight, prefetch));
        Assert.Equal(key, error.Key);
        Assert.Equal(value, error.ActualValue);
        Assert.Contains($"{key} = {value}: must be at least 1", error.Message);
    }

    [Fact]
    public void PipelineOptions_with_should_validate_the_changed_value_too()
    {
        var error = Assert.Throws<PipelineSettingsException>(() => PipelineSettings.Default with { PrefetchSteps = 0 });
        Assert.Equal(PipelineSettings.PrefetchStepsKey, error.Key);
        Assert.Equal(new PipelineSettings(3, 2), PipelineSettings.Default with { MaxInFlightPerTier = 3, PrefetchSteps = 2 });
    }

    [Fact]
    public void PipelineOptions_from_config_should_reject_a_zero_setting_in_hocon()
    {
        var config = ConfigurationFactory.ParseString("flexgen.pipeline.max-in-flight-per-tier = 0").WithFallback(FlexGenHocon.Config);
        var error = Assert.Throws<PipelineSettingsException>(() => PipelineSettings.FromConfig(config));
        Assert.Equal(PipelineSettings.MaxInFlightPerTierKey, error.Key);
    }

    [Fact]
    public void FlexGenSystem_start_should_fail_at_startup_on_a_negative_prefetch_steps_in_hocon()
    {
        var policy = TestPolicies.Offloaded(1, overlap: true, sep: false, cpuCacheCompute: false);
        var config = ConfigurationFactory.ParseString("flexgen.pipeline.prefetch-steps = -2");
        var error = Assert.Throws<PipelineSettingsException>(() => FlexGenSystem.Start(policy, _ => new RecordingBackend(policy, 1), config: config, name: "bad-prefetch"));
        Assert.Equal(PipelineSettings.PrefetchStepsKey, error.Key);
        Assert.Equal(-2, error.ActualValue);
    }
}

public class CoordinatorBadSettingsTests : Akka.TestKit.Xunit2.TestKit
{
    public CoordinatorBadSettingsTests()
        : base(ConfigurationFactory.ParseString("flexgen.pipeline.max-in-flight-per-tier = 0").WithFallback(FlexGenHocon.Config), "bad-settings")
    {
    }

    [Fact]
    public void Coordinator_should_stop_at_creation_when_its_systems_pipeline_settings_are_out_of_range()
    {
        var policy = TestPolicies.Offloaded(1, overlap: true, sep: false, cpuCacheCompute: false);
        int backendsMade = 0;
        EventFilter.Exception<ActorInitializationException>().ExpectOne(() =>
        {
            var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, p => { backendsMade++; return new RecordingBackend(p, 1); }), "coordinator");
            Watch(coordinator);
            ExpectTerminated(coordinator, TimeSpan.FromSeconds(5));
        });
        Assert.Equal(0, backendsMade);
    }
}
