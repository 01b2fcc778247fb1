namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using Xunit.Abstractions;

public class PeakMemoryTests
{
    private readonly ITestOutputHelper _output;

    public PeakMemoryTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public async Task Peak_bytes_should_be_per_request_and_include_the_resident_weights()
    {
        var offload = Fixtures.NewOffloadDir();
        try
        {
            // Without overlap one task runs at a time, so a request's peak does not depend on thread timing.
            var policy = Fixtures.Policies()["all_gpu"] with { Overlap = false };
            var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = offload };
            TorchPipelineBackend? backend = null;
            await using (var flexgen = FlexGenSystem.Start(settings.Policy, policy => backend = TorchPipelineBackend.Create(settings, policy), name: "peaks"))
            {
                GenerateRequest Request(int genLen) => new() { PromptIds = Fixtures.PromptIds().ToRows(), AttentionMask = Fixtures.PromptMask().ToRows(), Generation = new(genLen) };
                var small = await flexgen.GenerateAsync(Request(2));
                long weights = backend!.Tiers.Gpu.Stats.CurrentBytes; // between requests only the weights stay
                var large = await flexgen.GenerateAsync(Request(16));
                var smallAgain = await flexgen.GenerateAsync(Request(2));
                _output.WriteLine($"gpu: weights {weights:N0} B, peak small {small.PeakBytes["gpu"]:N0}, large {large.PeakBytes["gpu"]:N0}, small again {smallAgain.PeakBytes["gpu"]:N0}");

                Assert.True(weights > 0);
                Assert.True(small.PeakBytes["gpu"] > weights, "a request's peak holds the weights and its own cache and buffers");
                Assert.True(large.PeakBytes["gpu"] > small.PeakBytes["gpu"], "a longer generation holds a larger cache");
                Assert.Equal(small.PeakBytes["gpu"], smallAgain.PeakBytes["gpu"]); // not the larger request's peak
            }
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }
}
