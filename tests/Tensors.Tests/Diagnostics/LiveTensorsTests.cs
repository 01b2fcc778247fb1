namespace FlexGen.Tensors.Tests.Diagnostics;

using FlexGen.Tensors.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

public sealed class LiveTensorsTests
{
    [Fact]
    public void LeakedBy_should_count_tensors_left_alive_and_not_those_disposed()
    {
        Tensor? kept = null;
        long leaked = LiveTensors.LeakedBy(() =>
        {
            using var temporary = torch.ones(3);
            kept = temporary.add(1);
        });
        Assert.Equal(1, leaked);
        Assert.Equal(-1, LiveTensors.LeakedBy(() => kept!.Dispose())); // disposing an earlier tensor counts down
    }

    [Fact]
    public void Scoped_tensors_should_count_as_released_when_the_scope_ends()
    {
        long leaked = LiveTensors.LeakedBy(() =>
        {
            using var scope = NewDisposeScope();
            _ = torch.zeros(4).mul(2).sum();
        });
        Assert.Equal(0, leaked);
        Assert.True(LiveTensors.InProcess >= 0);
    }
}
