namespace FlexGen.Actors.Tests.Numerics;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using TorchSharp;
using Xunit.Abstractions;

/// <summary>
/// attn_sparsity &lt; 1 on the real backend: the decode step loads the whole key cache but fetches from the value
/// cache's home only the rows at each row's top-k positions (FlexGen's _sparse_attention_value).
/// </summary>
public sealed class SparseAttentionTests : IAsyncLifetime
{
    private const int GenLen = 10;
    private readonly ITestOutputHelper _output;
    private readonly string _offloadDir = Fixtures.NewOffloadDir();
    private FlexGenSystem? _system;

    public SparseAttentionTests(ITestOutputHelper output) => _output = output;

    public Task InitializeAsync()
    {
        _system = FlexGenSystem.Start(new EngineSettings
        {
            ModelPath = Fixtures.Model,
            Policy = Fixtures.Policies()["sparse_attn_0.5_cache_disk"],
            OffloadDirectory = _offloadDir,
        }, "sparse");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _system!.DisposeAsync();
        Directory.Delete(_offloadDir, recursive: true);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Sparse_decode_should_read_only_the_top_k_value_rows_and_give_the_reference_tokens(bool cpuCacheCompute)
    {
        var sparsePolicy = Fixtures.Policies()["sparse_attn_0.5_cache_disk"] with { CpuCacheCompute = cpuCacheCompute };
        var sparse = await Generate(sparsePolicy);
        var dense = await Generate(sparsePolicy with { AttnSparsity = 1.0 });

        // What the cache holds: (past, gpu_batch_size * n_head, head_dim) float16 per attention layer, batch, decode step.
        var config = OptConfig.FromHuggingFaceConfig(Fixtures.Model);
        long rowBytes = (long)sparsePolicy.GpuBatchSize * config.NHead * (config.InputDim / config.NHead) * 2;
        long perStepAndLayer = config.NumHiddenLayers * sparsePolicy.NumGpuBatches * rowBytes;
        long keyBytes = 0, sparseValueBytes = 0;
        for (int i = 1; i < GenLen; i++)
        {
            long past = Fixtures.PromptIds()[0].Length + i - 1;
            keyBytes += past * perStepAndLayer;
            sparseValueBytes += (long)(0.5 * past) * perStepAndLayer; // FlexGen's top-k = int(sparsity * past)
        }

        long denseValueBytes = keyBytes;
        long Sum(GenerationResult r, TaskKind kind) => r.Trace.Events.Where(e => e.Task.Kind == kind && e.Task.Token > 0).Sum(e => e.Bytes);
        _output.WriteLine($"cpu_cache_compute={cpuCacheCompute}: value bytes read dense {denseValueBytes:N0}, sparse 0.5 {sparseValueBytes:N0}; " +
            $"cache loads dense {Sum(dense, TaskKind.LoadCache):N0} sparse {Sum(sparse, TaskKind.LoadCache):N0}; " +
            $"decode computes dense {Sum(dense, TaskKind.ComputeLayer):N0} sparse {Sum(sparse, TaskKind.ComputeLayer):N0}");

        // Dense loads keys and values; sparse loads only the keys ahead of the compute ...
        Assert.Equal(2 * keyBytes, Sum(dense, TaskKind.LoadCache));
        Assert.Equal(keyBytes, Sum(sparse, TaskKind.LoadCache));
        // ... and the compute reads the top-k value rows instead of all past ones.
        Assert.Equal(denseValueBytes - sparseValueBytes, Sum(dense, TaskKind.ComputeLayer) - Sum(sparse, TaskKind.ComputeLayer));
        Assert.True(sparseValueBytes < denseValueBytes);

        Assert.Equal(ReferenceTokens(0.5), sparse.OutputIds.SelectMany(r => r).ToArray());
        Assert.Equal(ReferenceTokens(1.0), dense.OutputIds.SelectMany(r => r).ToArray());
    }

    private Task<GenerationResult> Generate(FlexGen.Tensors.Policies.Policy policy) => _system!.GenerateAsync(new GenerateRequest
    {
        PromptIds = Fixtures.PromptIds().ToRows(),
        AttentionMask = Fixtures.PromptMask().ToRows(),
        Generation = new(GenLen),
        Policy = policy,
    });

    private static long[] ReferenceTokens(double sparsity)
    {
        using var weights = OptWeights.Load(Fixtures.Model);
        using var ids = torch.tensor(Fixtures.PromptIds().SelectMany(r => r).ToArray(), [8, 12], torch.ScalarType.Int64);
        using var mask = torch.tensor(Fixtures.PromptMask().SelectMany(r => r).ToArray(), [8, 12]);
        using var reference = ReferenceGenerator.Generate(weights, ids, mask,
            new GenerationSettings(GenLen), new ReferenceRun(ComputeSettings.Float32) { CacheDtype = torch.ScalarType.Float16, AttnSparsity = sparsity });
        return reference.OutputIds.data<long>().ToArray();
    }
}
