namespace FlexGen.Actors.Messages;

using System.Collections.Immutable;
using Akka.Actor;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Tracing;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;

// Pipeline coordinator (the coordinating node) <-> stage actors (one per node, the coordinating node's included), across
// nodes of an Akka cluster. The coordinator asks each stage to describe itself, plans the layer ranges, has each stage
// load its range (LoadStage -> StageLoaded), then per block tells every stage to run its part (RunStageBlock). Hidden
// states go stage to stage and the sampled ids from the last stage back to the first (StageInput, our own binary
// serializer); the last stage reports each token (StageTokens) and a stop (StageStopped) to the coordinator, which
// passes a stop on to every stage (StopStageAfter). Each stage answers StageBlockDone (its trace; the last stage's the
// output ids) or StageBlockFailed. AbortStageBlock ends a block everywhere (a node is gone, a stage failed);
// ReleaseStage frees a stage's weights and offload folder.

/// <summary>Asks a stage actor for its <see cref="StageDescription"/>.</summary>
public sealed record DescribeStage
{
    public static DescribeStage Instance { get; } = new();
}

/// <summary>What a stage node offers: its policy and the most bytes its tiers and its remoting accept.</summary>
/// <param name="Node">The node's address (akka.tcp://system@host:port).</param>
/// <param name="Policy">The policy its layers run under (its own placement; the GPU batch geometry must be the plan's).</param>
/// <param name="CapacityBytes">Bytes its tiers' budgets allow in all (GPU + CPU + disk); null: no budget is set.</param>
/// <param name="MaxFrameBytes">The largest message its remoting accepts (akka.remote.dot-netty.tcp.maximum-frame-size).</param>
public sealed record StageDescription(string Node, Policy Policy, long? CapacityBytes, long MaxFrameBytes);

/// <summary>The model a stage loads its layers of: as the coordinating node names it (folder or preset, weights path).</summary>
/// <param name="Model">A model folder (which must exist at the same path on the stage's machine) or a preset name.</param>
/// <param name="Path">For a preset: the folder holding its weights, or _DUMMY_; null for a folder.</param>
public sealed record StageModel(string Model, string? Path);

/// <summary>Load <see cref="Layers"/> of <see cref="Model"/> as stage <see cref="Index"/> of pipeline <see cref="PipelineId"/>.</summary>
public sealed record LoadStage(Guid PipelineId, int Index, StageModel Model, LayerRange Layers);

public sealed record StageLoaded(Guid PipelineId, int Index, string Node);

public sealed record StageLoadFailed(Guid PipelineId, int Index, string Node, string Reason);

/// <summary>
/// Run stage <see cref="Index"/>'s part of <see cref="Block"/>: the stage's outputs go to <see cref="Next"/> (the last
/// stage's sampled ids to <see cref="First"/>), its reports to <see cref="Coordinator"/>.
/// </summary>
public sealed record RunStageBlock(Guid PipelineId, int Index, RunId Run, BlockRequest Block, IActorRef Next, IActorRef First, IActorRef Coordinator);

/// <summary>An input of a stage's first layer for run <see cref="Run"/> (see <see cref="StageTensor"/>).</summary>
public sealed record StageInput(RunId Run, StageTensor Input);

/// <summary>The last stage sampled token <see cref="GeneratedTokens.Token"/> of some rows of run <see cref="Run"/>.</summary>
public sealed record StageTokens(RunId Run, GeneratedTokens Tokens);

/// <summary>Every row of run <see cref="Run"/> emitted the stop token by token <see cref="Token"/>: later tokens need not run.</summary>
public sealed record StageStopped(RunId Run, int Token);

/// <summary>Drop every part of run <see cref="Run"/> after token <see cref="Token"/> not yet started.</summary>
public sealed record StopStageAfter(RunId Run, int Token);

/// <summary>
/// Stage <see cref="Index"/> finished its part of run <see cref="Run"/> and freed it.
/// </summary>
/// <param name="OutputIds">(rows, gen_len) the ids sampled (the last stage); empty from the others.</param>
/// <param name="Trace">What the stage's pipeline actors ran, times from <see cref="TraceOriginUtc"/>.</param>
/// <param name="TraceOriginUtc">The wall-clock moment the stage's trace times count from (merging the nodes' traces).</param>
/// <param name="PeakBytes">The stage's peak bytes per memory tier since its block began.</param>
public sealed record StageBlockDone(
    RunId Run,
    int Index,
    ImmutableArray<ImmutableArray<long>> OutputIds,
    ImmutableArray<TraceEvent> Trace,
    DateTime TraceOriginUtc,
    ImmutableDictionary<string, long> PeakBytes);

/// <summary>Stage <see cref="Index"/> on <see cref="Node"/> could not run its part of <see cref="Run"/> (its run is freed).</summary>
public sealed record StageBlockFailed(RunId Run, int Index, string Node, string Reason);

/// <summary>End run <see cref="Run"/> on this stage: skip what has not started, free it once no part runs.</summary>
public sealed record AbortStageBlock(RunId Run);

/// <summary>Stage <see cref="Index"/> holds nothing of run <see cref="Run"/> any more.</summary>
public sealed record StageBlockAborted(RunId Run, int Index);

/// <summary>Free the stage's weights, tiers and offload folder (pipeline <see cref="PipelineId"/> is over).</summary>
public sealed record ReleaseStage(Guid PipelineId);

/// <summary>Asks the pipeline coordinator to form its pipeline (wait for the stages, plan, load them): answered with a <see cref="PipelinePlan"/>.</summary>
public sealed record FormPipeline
{
    public static FormPipeline Instance { get; } = new();
}

/// <summary>One stage of a plan: which node, which layers, under which policy, with how many weight bytes.</summary>
public sealed record PlannedStage(int Index, string Node, LayerRange Layers, long WeightBytes, Policy Policy);

/// <summary>
/// The layer ranges of a pipeline, first stage first, and the largest message between stages (a hidden state
/// of the prefill), which the remoting's frame size was set from.
/// </summary>
public sealed record PipelinePlan(Guid PipelineId, ImmutableArray<PlannedStage> Stages, long LargestMessageBytes, long FrameBytes)
{
    public override string ToString() =>
        $"pipeline of {Stages.Length} stages (largest message {LargestMessageBytes:N0} bytes, frame {FrameBytes:N0} bytes):" + string.Concat(Stages.Select(s =>
            $"\n  stage {s.Index}: {s.Layers} ({s.WeightBytes:N0} weight bytes) on {s.Node}; weights gpu/cpu/disk {s.Policy.WGpuPercent:0}/{s.Policy.WCpuPercent:0}/{s.Policy.WDiskPercent:0}%"));
}
