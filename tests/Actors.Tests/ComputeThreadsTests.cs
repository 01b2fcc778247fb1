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

    [Fact]
    public void EngineSettings_should_take_the_given_threads_else_the_rule_for_the_policy()
    {
        var resident = Policy.FromPercent([100, 0, 100, 0, 100, 0], 2, 1);
        var weightsOnDisk = Policy.FromPercent([0, 0, 100, 0, 100, 0], 2, 1);
        var unset = new EngineSettings { ModelPath = Fixtures.Model, Policy = resident };
        var given = unset with { ComputeThreads = 3 };

        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk: false), unset.ComputeThreadsFor(resident));
        Assert.Equal(TorchRuntime.DefaultComputeThreadsFor(leaveCoreToDisk: true), unset.ComputeThreadsFor(weightsOnDisk));
        Assert.Equal(3, given.ComputeThreadsFor(weightsOnDisk));
    }
}
