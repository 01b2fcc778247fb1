namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using Xunit.Abstractions;

public class PolicyTokenTests
{
    private readonly ITestOutputHelper _output;

    public PolicyTokenTests(ITestOutputHelper output) => _output = output;

    [Theory]
    [InlineData("all_gpu")]
    [InlineData("all_gpu_no_overlap_joint_layer")]
    [InlineData("weights_disk_cache_cpu_cpu_compute")]
    [InlineData("weights_split_3way_cache_cpu")]
    [InlineData("cache_mixed_gpu_cpu_cpu_compute")]
    [InlineData("act_on_cpu")]
    public async Task Uncompressed_dense_policy_should_give_the_hugging_face_tokens(string name)
    {
        var policy = Fixtures.Policies()[name];
        var settings = new FlexGenSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = Fixtures.NewOffloadDir() };
        await using var flexgen = FlexGenSystem.Start(settings, "tokens");
        var result = await flexgen.GenerateAsync(new GenerateRequest
        {
            PromptIds = Fixtures.PromptIds(),
            AttentionMask = Fixtures.PromptMask(),
            GenLen = 10,
        });
        var expected = Fixtures.HfTokens();
        for (int r = 0; r < expected.Length; r++)
        {
            _output.WriteLine($"{string.Join(' ', result.OutputIds[r])} | {string.Join(' ', expected[r])}");
        }

        Assert.Equal(expected, result.OutputIds.Select(r => r.ToArray()).ToArray());
    }
}
