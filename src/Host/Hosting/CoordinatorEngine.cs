namespace FlexGen.Host.Hosting;

using System.Collections.Immutable;
using Akka.Actor;
using Akka.Hosting;
using FlexGen.Actors;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using FlexGen.Host.Generation;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;
using Microsoft.Extensions.DependencyInjection;

/// <summary>
/// The generation engine over the actor pipeline: one <see cref="GenerateRequest"/> per run, asked of the
/// coordinator. The coordinator is looked up at the first run, so the engine (and the service over it) can be
/// injected into hosted services constructed before Akka.Hosting has started the actor system.
/// </summary>
public sealed class CoordinatorEngine(IServiceProvider services, ModelConfig model, Policy policy) : IGenerationEngine
{
    private FlexGenSystem? _flexGen;

    public ModelConfig Model { get; } = model;

    public Policy Policy { get; } = policy;

    public async Task<EngineRun> RunAsync(long[,] inputIds, GenerationSettings settings, int? cutGenLen, IProgress<GenerationProgress>? progress,
        CancellationToken cancellation)
    {
        int rows = inputIds.GetLength(0), cols = inputIds.GetLength(1);
        var prompts = ImmutableArray.CreateBuilder<ImmutableArray<long>>(rows);
        for (int r = 0; r < rows; r++)
        {
            var row = ImmutableArray.CreateBuilder<long>(cols);
            for (int c = 0; c < cols; c++) row.Add(inputIds[r, c]);
            prompts.Add(row.MoveToImmutable());
        }
        var request = new GenerateRequest
        {
            PromptIds = prompts.MoveToImmutable(),
            PadTokenId = Model.PadTokenId,
            Generation = settings,
            CutGenLen = cutGenLen,
        };
        GenerationResult result;
        var flexGen = _flexGen ??= await AttachAsync(cancellation).ConfigureAwait(false);
        try
        {
            result = await flexGen.GenerateAsync(request, progress, cancellation).ConfigureAwait(false);
        }
        catch (GenerationFailedException ex) when (ex.InnerException is { } cause)
        {
            // Say what failed (the cause), keep the request context as the outer message.
            throw new InvalidOperationException($"generation failed: {cause.Message}", cause);
        }

        var output = new long[rows, settings.GenLen];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < settings.GenLen; c++)
                output[r, c] = result.OutputIds[r][c];
        var statistics = new RunStatistics(rows, cols, cutGenLen ?? settings.GenLen, result.Timings.Prefill, result.Timings.Decode, result.PeakBytes);
        return new EngineRun(output, statistics, new TraceTimeline(result.Trace));
    }

    private async Task<FlexGenSystem> AttachAsync(CancellationToken cancellation)
    {
        var coordinator = await services.GetRequiredService<IRequiredActor<GenerationCoordinator>>().GetAsync(cancellation).ConfigureAwait(false);
        return FlexGenSystem.Attach(services.GetRequiredService<ActorSystem>(), coordinator);
    }

    private sealed class TraceTimeline(ExecutionTrace trace) : IRunTimeline
    {
        public void WriteChromeJson(string path) => trace.WriteChromeJson(path);

        public string Summary => trace.Summarize().ToString();

        public string Breakdown => trace.Breakdown().ToString();

        public IReadOnlyDictionary<string, long> BytesByTier =>
            trace.Summarize().Tiers.ToDictionary(t => t.Tier.ActorName(), t => t.Bytes);

        public IReadOnlyList<TierActivity> ActivityDuring(bool prefill)
        {
            var phase = trace.OfPhase(prefill);
            return phase.Summarize().Tiers.Select(t =>
            {
                long stored = phase.EventsOf(t.Tier).Where(e => e.Task.Kind is TaskKind.StoreCache or TaskKind.StoreHidden).Sum(e => e.Bytes);
                return new TierActivity(t.Tier.ActorName(), t.Tasks, t.Bytes - stored, stored, t.Busy);
            }).ToList();
        }
    }
}
