namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors;
using FlexGen.Tensors.Tiers;

public class CudaStreamsTests
{
    [Fact]
    public void Cuda_streams_should_report_unavailability_without_cuda_and_work_with_it()
    {
        using var scope = CudaStreams.UseDedicatedStream();
        if (!TorchRuntime.CudaAvailable)
        {
            Assert.False(CudaStreams.IsAvailable);
            Assert.False(CudaStreams.EventsAvailable);
            Assert.Contains("unavailable", CudaStreams.Status);
            Assert.Null(CudaStreams.TryGetStreamFromPool());
            Assert.Null(CudaStreams.TryGetCurrentStream());
            Assert.Null(scope.Stream);
        }
        else
        {
            Assert.True(CudaStreams.IsAvailable, CudaStreams.Status);
            Assert.NotNull(scope.Stream);
            Assert.Equal(scope.Stream.Handle, CudaStreams.TryGetCurrentStream()!.Handle);
            scope.Stream.Synchronize();
        }
    }
}
