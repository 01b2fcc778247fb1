namespace FlexGen.Host.Hosting;

using System.Diagnostics;
using FlexGen.Host.Generation;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>
/// Interim engine until the pipeline's model backend lands: the math helper's reference generator over weights
/// loaded once (no tiers, no actors). Prefill is not timed separately: the whole run counts as decode.
/// </summary>
public sealed class ReferenceEngine : IGenerationEngine, IDisposable
{
    private readonly FlexGenSetup _setup;
    private readonly SemaphoreSlim _oneAtATime = new(1, 1);
    private OptWeights? _weights;

    public ReferenceEngine(FlexGenSetup setup)
    {
        _setup = setup;
    }

    public OptConfig Model => _setup.Model.Config;

    public Policy Policy => _setup.Policy;

    public async Task<EngineRun> RunAsync(long[,] inputIds, GenerationSettings settings, int? cutGenLen, CancellationToken cancellation)
    {
        await _oneAtATime.WaitAsync(cancellation).ConfigureAwait(false);
        try
        {
            return await Task.Run(() => Run(inputIds, settings, cutGenLen), cancellation).ConfigureAwait(false);
        }
        finally
        {
            _oneAtATime.Release();
        }
    }

    private EngineRun Run(long[,] inputIds, GenerationSettings settings, int? cutGenLen)
    {
        _weights ??= _setup.Model.Location.WeightsFolder is { } folder
            ? OptWeights.Load(folder, Model)
            : OptWeights.Random(Model, seed: 0);
        int rows = inputIds.GetLength(0), cols = inputIds.GetLength(1);
        int computed = cutGenLen ?? settings.GenLen;
        var flat = new long[inputIds.Length];
        Buffer.BlockCopy(inputIds, 0, flat, 0, flat.Length * sizeof(long));
        var clock = Stopwatch.StartNew();
        using var scope = torch.NewDisposeScope();
        var ids = torch.tensor(flat, [rows, cols]);
        var options = new GenerationOptions(computed, new ComputeSettings(_setup.ComputeDtype))
        {
            Sampling = new SamplingOptions(settings.DoSample, settings.Temperature, settings.Seed is { } s ? unchecked((ulong)s) : null),
            StopTokenId = settings.StopTokenId,
            AttnSparsity = Policy.AttnSparsity,
        };
        using var result = ReferenceGenerator.Generate(_weights, ids, null, options);
        var generated = result.OutputIds.data<long>().ToArray();
        var output = new long[rows, settings.GenLen];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < settings.GenLen; c++)
                output[r, c] = c < computed ? generated[r * computed + c] : Model.PadTokenId;
        var stats = new RunStatistics(rows, cols, computed, TimeSpan.Zero, clock.Elapsed, new Dictionary<string, long>());
        return new EngineRun(output, stats, null);
    }

    public void Dispose()
    {
        _weights?.Dispose();
        _oneAtATime.Dispose();
    }
}
