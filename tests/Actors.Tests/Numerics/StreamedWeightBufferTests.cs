namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;
using Xunit.Abstractions;

public class StreamedWeightBufferTests
{
    private readonly ITestOutputHelper _output;

    public StreamedWeightBufferTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// Weights streamed from disk (float16 there, float32 compute) land in buffers reused across tokens: a longer
    /// generation makes exactly as many more GPU-tier allocations as the same run with the weights resident on the GPU
    /// tier (its hidden states and cache entries), none for the weights of its extra decode steps.
    /// </summary>
    [Fact]
    public async Task Streamed_weights_should_reuse_their_buffers_across_decode_steps()
    {
        // Without overlap one task runs at a time, so the counts do not depend on thread timing.
        var resident = Fixtures.Policies()["all_gpu"] with { Overlap = false };
        var streamed = resident with { WGpuPercent = 0, WCpuPercent = 0 };
        long residentExtra = await ExtraAllocations(resident);
        long streamedExtra = await ExtraAllocations(streamed);
        _output.WriteLine($"GPU-tier allocations of 6 more tokens: weights resident {residentExtra}, streamed from disk {streamedExtra}");
        Assert.True(residentExtra > 0);
        Assert.Equal(residentExtra, streamedExtra);
    }

    /// <summary>The GPU-tier allocations a generation of 8 tokens makes beyond one of 2.</summary>
    private static async Task<long> ExtraAllocations(Policy policy)
    {
        var offload = Fixtures.NewOffloadDir();
        try
        {
            var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = offload };
            TorchPipelineBackend? backend = null;
            await using var flexgen = FlexGenSystem.Start(settings.Policy, policy => backend = TorchPipelineBackend.Create(settings, policy), name: "streamed");
            async Task<long> Allocations(int genLen)
            {
                var request = new GenerateRequest { PromptIds = Fixtures.PromptIds().ToRows(), AttentionMask = Fixtures.PromptMask().ToRows(), Generation = new(genLen) };
                await flexgen.GenerateAsync(request); // loads the model on first use: counted from after it
                long before = backend!.Tiers.Gpu.Stats.TotalAllocations;
                await flexgen.GenerateAsync(request);
                return backend.Tiers.Gpu.Stats.TotalAllocations - before;
            }

            long shorter = await Allocations(2);
            return await Allocations(8) - shorter;
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }
}
