namespace FlexGen.Tensors.Tests;

/// <summary>The default rule for libtorch's intra-op threads (setting them is the backend's, tested in Actors.Tests).</summary>
public class ComputeThreadsTests
{
    [Theory]
    [InlineData("1", 1)]
    [InlineData("3", 3)]
    [InlineData(" 2 ", 2)]
    [InlineData("1024", 1024)]
    public void ComputeThreadsOf_should_honour_a_valid_OMP_NUM_THREADS(string omp, int expected)
    {
        Assert.Equal(expected, TorchRuntime.ComputeThreadsOf(omp, leaveCoreToDisk: false, cores: 8));
        Assert.Equal(expected, TorchRuntime.ComputeThreadsOf(omp, leaveCoreToDisk: true, cores: 8));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-2")]
    [InlineData("1025")]
    [InlineData("4,2")]
    [InlineData("many")]
    public void ComputeThreadsOf_should_ignore_an_invalid_OMP_NUM_THREADS_and_use_every_core(string? omp) =>
        Assert.Equal(6, TorchRuntime.ComputeThreadsOf(omp, leaveCoreToDisk: false, cores: 6));

    [Theory]
    [InlineData(1, false, 1)]
    [InlineData(1, true, 1)]
    [InlineData(2, false, 2)]
    [InlineData(2, true, 1)]
    [InlineData(16, true, 15)]
    [InlineData(4096, false, 1024)]
    [InlineData(4096, true, 1024)]
    public void ComputeThreadsOf_should_leave_one_of_two_or_more_cores_to_a_run_that_streams_from_disk(int cores, bool leaveCoreToDisk, int expected) =>
        Assert.Equal(expected, TorchRuntime.ComputeThreadsOf(null, leaveCoreToDisk, cores));

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
