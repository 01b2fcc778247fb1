namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Numerics;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using Xunit.Abstractions;

/// <summary>
/// Pipeline stages on three cluster nodes (three ActorSystems on loopback in this process), each under its own policy:
/// the tokens equal those of one node (the fixtures' float32 reference tokens, which one node gives exactly).
/// </summary>
public class StagePipelineTests(ITestOutputHelper output)
{
    private static IReadOnlyList<Policy> ThreePolicies()
    {
        var policies = Fixtures.Policies();
        // Weights on the GPU tier, on disk (CPU attention over a CPU cache), split over three tiers without overlap.
        return [policies["all_gpu"], policies["weights_disk_cache_cpu_cpu_compute"], policies["weights_split_3way_cache_cpu"]];
    }

    [Fact]
    public async Task Three_stages_should_give_the_single_node_tokens_of_opt_tiny()
    {
        await using var nodes = await StageNodes.StartAsync(Fixtures.Model, ThreePolicies(), maxPromptLen: 12, maxGenLen: 10);
        var plan = await nodes.FormAsync();
        output.WriteLine(plan.ToString());
        Assert.Equal(3, plan.Stages.Length);
        Assert.Equal(plan.Stages.Sum(s => s.Layers.Count), plan.Stages[0].Layers.Total);

        var result = await FlexGenSystem.Attach(nodes.Systems[0], nodes.Coordinator).GenerateAsync(new GenerateRequest
        {
            PromptIds = Fixtures.PromptIds().ToRows(),
            AttentionMask = Fixtures.PromptMask().ToRows(),
            Generation = new(10),
        }).WaitAsync(TimeSpan.FromMinutes(3));

        Assert.Equal(Fixtures.HfTokens(), result.OutputIds.Select(r => r.ToArray()).ToArray());
        Assert.Equal(3, result.Trace.Nodes.Count);

        // The hidden-state messages between stages appear in the trace with their size: the StoreHidden of each sending
        // stage's last layer carries its (b, s, h) float32 payload (s = the prompt at prefill, then 1).
        int hidden = ModelFamilies.FromConfigFile(Fixtures.Model).HiddenSize;
        int rows = ThreePolicies()[0].GpuBatchSize, promptLen = Fixtures.PromptIds()[0].Length;
        for (int s = 0; s < plan.Stages.Length - 1; s++)
        {
            int lastLayer = plan.Stages[s].Layers.Count - 1;
            var sends = result.Trace.Events
                .Where(e => e.Node!.StartsWith($"stage {s} ", StringComparison.Ordinal) && e.Task.Kind == TaskKind.StoreHidden && e.Task.Layer == lastLayer)
                .ToArray();
            Assert.Equal(10 * ThreePolicies()[0].NumGpuBatches, sends.Length);
            Assert.All(sends, e => Assert.Equal((long)rows * (e.Task.Token == 0 ? promptLen : 1) * hidden * sizeof(float), e.Bytes));
        }
    }

    [Fact]
    public async Task Three_stages_should_give_the_single_node_tokens_of_llama_tiny()
    {
        await using var nodes = await StageNodes.StartAsync(LlamaPolicyRuns.Model, ThreePolicies(), maxPromptLen: 12, maxGenLen: 10);
        output.WriteLine((await nodes.FormAsync()).ToString());

        var result = await FlexGenSystem.Attach(nodes.Systems[0], nodes.Coordinator).GenerateAsync(new GenerateRequest
        {
            PromptIds = LlamaPolicyRuns.Rows("prompt_ids.npy").ToRows(),
            AttentionMask = Fixtures.Mask(LlamaPolicyRuns.Rows("prompt_mask.npy")).ToRows(),
            Generation = new(10),
        }).WaitAsync(TimeSpan.FromMinutes(3));

        Assert.Equal(LlamaPolicyRuns.Rows("ref_fp32_tokens.npy"), result.OutputIds.Select(r => r.ToArray()).ToArray());
    }
}
