namespace FlexGen.Actors.Tracing;

using FlexGen.Actors.Schedule;

/// <summary>
/// One executed task part: which tier ran it, what it was, when (offsets from the trace's origin) and how
/// many bytes it moved (loads/stores) or read (compute: the weights and cache it consumed).
/// </summary>
public sealed record TraceEvent(PipelineActorKind Tier, BlockTask Task, TimeSpan Start, TimeSpan End, long Bytes)
{
    public TimeSpan Duration => End - Start;

    public string Actor => Tier.ActorName();
}
