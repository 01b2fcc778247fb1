namespace FlexGen.Tensors.Tests;

/// <summary>The default rule for libtorch's intra-op threads (setting them is the backend's, tested in Actors.Tests).</summary>
public class ComputeThreadsTests
{
    private static int EveryCore => Math.Min(Environment.ProcessorCount, TorchRuntime.MaxThreads);

    [Theory]
    [InlineData("1", 1)]
    [InlineData("3", 3)]
    [InlineData(" 2 ", 2)]
    [InlineData("1024", 1024)]
    public void ComputeThreadsOf_should_honour_a_valid_OMP_NUM_THREADS(string omp, int expected) =>
        Assert.Equal(expected, TorchRuntime.ComputeThreadsOf(omp));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-2")]
    [InlineData("1025")]
    [InlineData("4,2")]
    [InlineData("many")]
    public void ComputeThreadsOf_should_ignore_an_invalid_OMP_NUM_THREADS_and_use_every_core(string? omp) =>
        Assert.Equal(EveryCore, TorchRuntime.ComputeThreadsOf(omp));

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(1025)]
    public void SetComputeThreads_should_refuse_a_count_outside_1_to_1024(int threads)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => TorchRuntime.SetComputeThreads(threads));
        Assert.Equal("threads", ex.ParamName);
    }
}
