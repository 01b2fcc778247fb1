namespace FlexGen.Actors.Tracing;

using FlexGen.Actors.Schedule;

/// <summary>
/// One executed task part: which tier ran it, what it was, when (offsets from the trace's origin) and how
/// many bytes it moved (loads/stores) or read (compute: the weights and cache it consumed). In a pipeline over several
/// nodes, <see cref="Node"/> names the stage that ran it (null on one node).
/// </summary>
public sealed record TraceEvent(PipelineActorKind Tier, BlockTask Task, TimeSpan Start, TimeSpan End, long Bytes, string? Node = null)
{
    public TimeSpan Duration => End - Start;

    public string Actor => Tier.ActorName();
}
