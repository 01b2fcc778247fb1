namespace FlexGen.Actors.Messages;

using System.Collections.Immutable;
using System.Runtime.InteropServices;
using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Serialization;
using FlexGen.Actors.Pipeline;
using FlexGen.Actors.Schedule;
using FlexGen.Actors.Tracing;
using TorchSharp;

/// <summary>
/// The binary form of the stage messages that carry bulk data: <see cref="StageInput"/> (a hidden state or token ids:
/// dtype, shape, raw bytes) and <see cref="StageBlockDone"/> (output ids, trace events). Fixed little-endian layouts,
/// no JSON and no reflection: the bytes of a tensor are copied once each way. Bound in hocon/flexgen-cluster.conf.
/// </summary>
public sealed class StageMessageSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    private const string InputManifest = "stage-input";
    private const string DoneManifest = "stage-done";

    /// <summary>Akka's id of this serializer (ids up to 100 are Akka's own).</summary>
    public override int Identifier => 8_140;

    public override string Manifest(object o) => o switch
    {
        StageInput => InputManifest,
        StageBlockDone => DoneManifest,
        _ => throw new ArgumentException($"{nameof(StageMessageSerializer)} does not serialize {o.GetType()}", nameof(o)),
    };

    public override byte[] ToBinary(object obj)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
        {
            switch (obj)
            {
                case StageInput input:
                    WriteRun(writer, input.Run);
                    writer.Write(input.Input.Token);
                    writer.Write(input.Input.Batch);
                    WritePayload(writer, input.Input.Payload);
                    break;
                case StageBlockDone done:
                    WriteRun(writer, done.Run);
                    writer.Write(done.Index);
                    writer.Write(done.OutputIds.Length);
                    foreach (var row in done.OutputIds)
                    {
                        writer.Write(row.Length);
                        writer.Write(MemoryMarshal.AsBytes(row.AsSpan()));
                    }

                    writer.Write(done.Trace.Length);
                    foreach (var e in done.Trace)
                    {
                        writer.Write((int)e.Tier);
                        writer.Write((int)e.Task.Kind);
                        writer.Write(e.Task.Token);
                        writer.Write(e.Task.Layer);
                        writer.Write(e.Task.Batch);
                        writer.Write(e.Start.Ticks);
                        writer.Write(e.End.Ticks);
                        writer.Write(e.Bytes);
                    }

                    writer.Write(done.TraceOriginUtc.Ticks);
                    writer.Write(done.PeakBytes.Count);
                    foreach (var (tier, bytes) in done.PeakBytes)
                    {
                        writer.Write(tier);
                        writer.Write(bytes);
                    }

                    break;
                default:
                    throw new ArgumentException($"{nameof(StageMessageSerializer)} does not serialize {obj.GetType()}", nameof(obj));
            }
        }

        return stream.ToArray();
    }

    public override object FromBinary(byte[] bytes, string manifest)
    {
        using var reader = new BinaryReader(new MemoryStream(bytes));
        switch (manifest)
        {
            case InputManifest:
            {
                var run = ReadRun(reader);
                int token = reader.ReadInt32(), batch = reader.ReadInt32();
                return new StageInput(run, new StageTensor(token, batch, ReadPayload(reader)));
            }

            case DoneManifest:
            {
                var run = ReadRun(reader);
                int index = reader.ReadInt32();
                var rows = ImmutableArray.CreateBuilder<ImmutableArray<long>>(reader.ReadInt32());
                for (int r = rows.Capacity; r > 0; r--)
                {
                    rows.Add([.. MemoryMarshal.Cast<byte, long>(reader.ReadBytes(checked(reader.ReadInt32() * sizeof(long))))]);
                }

                var events = ImmutableArray.CreateBuilder<TraceEvent>(reader.ReadInt32());
                for (int e = events.Capacity; e > 0; e--)
                {
                    var tier = (PipelineActorKind)reader.ReadInt32();
                    var task = new BlockTask((TaskKind)reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32(), reader.ReadInt32());
                    events.Add(new TraceEvent(tier, task, new TimeSpan(reader.ReadInt64()), new TimeSpan(reader.ReadInt64()), reader.ReadInt64()));
                }

                var origin = new DateTime(reader.ReadInt64(), DateTimeKind.Utc);
                var peaks = ImmutableDictionary.CreateBuilder<string, long>();
                for (int p = reader.ReadInt32(); p > 0; p--)
                {
                    peaks.Add(reader.ReadString(), reader.ReadInt64());
                }

                return new StageBlockDone(run, index, rows.MoveToImmutable(), events.MoveToImmutable(), origin, peaks.ToImmutable());
            }

            default:
                throw new SerializationException($"{nameof(StageMessageSerializer)} knows no manifest '{manifest}'");
        }
    }

    /// <summary>Bytes <see cref="ToBinary"/> makes of a hidden-state input of <paramref name="payloadBytes"/> bytes and rank <paramref name="rank"/>: what the remoting's frame must hold.</summary>
    public static long InputBytes(long payloadBytes, int rank) => 16 + 4 + 4 + 4 + 4 + 4 + (8L * rank) + 4 + payloadBytes;

    private static void WriteRun(BinaryWriter writer, RunId run)
    {
        writer.Write(run.RequestId.ToByteArray());
        writer.Write(run.Block);
    }

    private static RunId ReadRun(BinaryReader reader) => new(new Guid(reader.ReadBytes(16)), reader.ReadInt32());

    private static void WritePayload(BinaryWriter writer, TensorPayload payload)
    {
        writer.Write((int)payload.Dtype);
        writer.Write(payload.Shape.Length);
        foreach (long dim in payload.Shape)
        {
            writer.Write(dim);
        }

        writer.Write(payload.Bytes.Length);
        writer.Write(payload.Bytes.AsSpan());
    }

    private static TensorPayload ReadPayload(BinaryReader reader)
    {
        var dtype = (torch.ScalarType)reader.ReadInt32();
        var shape = ImmutableArray.CreateBuilder<long>(reader.ReadInt32());
        for (int d = shape.Capacity; d > 0; d--)
        {
            shape.Add(reader.ReadInt64());
        }

        int length = reader.ReadInt32();
        var bytes = reader.ReadBytes(length);
        if (bytes.Length != length)
        {
            throw new SerializationException($"a stage input announces {length} bytes of tensor data and holds {bytes.Length}");
        }

        return new TensorPayload(dtype, shape.MoveToImmutable(), ImmutableCollectionsMarshal.AsImmutableArray(bytes));
    }
}
