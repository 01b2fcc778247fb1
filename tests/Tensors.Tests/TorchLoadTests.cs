namespace FlexGen.Tensors.Tests;

using TorchSharp;
using static TorchSharp.torch;

public class TorchLoadTests
{
    [Fact]
    public void Libtorch_should_load_and_multiply()
    {
        using var a = ones(2, 3);
        using var b = ones(3, 4);
        using var c = a.matmul(b);
        Assert.Equal(3f, c[1, 2].item<float>());
    }
}
