namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Engine;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors;
using FlexGen.Tensors.Policies;

/// <summary>
/// The backend sets libtorch's intra-op threads, which are process-wide: these tests run alone (not beside other
/// classes) and put the threads back.
/// </summary>
[Collection(TimingCollection.Name)]
public class ComputeThreadsTests
{
    [Fact]
    public void Creating_a_backend_should_set_libtorch_threads_to_the_settings_compute_threads()
    {
        int before = TorchRuntime.ComputeThreads;
        int wanted = before == 1 ? 2 : 1;
        string offload = Fixtures.NewOffloadDir();
        var policy = new Policy
        {
            GpuBatchSize = 2, NumGpuBatches = 1, WGpuPercent = 100, WCpuPercent = 0, CacheGpuPercent = 100, CacheCpuPercent = 0,
            ActGpuPercent = 100, ActCpuPercent = 0,
        };
        try
        {
            var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = offload, ComputeThreads = wanted };
            using var backend = TorchPipelineBackend.Create(settings, policy);

            Assert.Equal(wanted, TorchSharp.torch.get_num_threads());
        }
        finally
        {
            TorchRuntime.SetComputeThreads(before);
            Directory.Delete(offload, recursive: true);
        }
    }
}
