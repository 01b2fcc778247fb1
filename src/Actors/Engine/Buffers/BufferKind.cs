namespace FlexGen.Actors.Engine.Buffers;

using FlexGen.Actors.Schedule;

/// <summary>
/// A buffer kind, declared once: who makes it and which tasks read it. Every part of every consumer task in the
/// schedule releases it once; it is freed within the release of the last of those parts (or handed over by that part
/// into a buffer of another kind).
/// </summary>
/// <param name="Consumers">The consumer tasks of the buffer at a key (those not in the schedule are left out).</param>
internal sealed record BufferKind<TKey>(string Name, TaskKind Producer, Func<TKey, IEnumerable<BlockTask>> Consumers)
    where TKey : struct, IBufferKey;
