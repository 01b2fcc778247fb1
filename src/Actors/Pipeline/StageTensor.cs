namespace FlexGen.Actors.Pipeline;

using System.Collections.Immutable;
using System.Runtime.InteropServices;
using TorchSharp;

/// <summary>
/// A tensor's values as they cross from one node to another: dtype, shape and the raw bytes (row-major, host byte
/// order). Immutable: the bytes are never written after construction.
/// </summary>
public sealed record TensorPayload(torch.ScalarType Dtype, ImmutableArray<long> Shape, ImmutableArray<byte> Bytes)
{
    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);

    /// <summary>A copy of <paramref name="tensor"/>'s values (read on the CPU).</summary>
    public static TensorPayload Of(torch.Tensor tensor)
    {
        using var scope = torch.NewDisposeScope();
        var onCpu = tensor.cpu().contiguous();
        return new TensorPayload(tensor.dtype, [.. tensor.shape], ImmutableCollectionsMarshal.AsImmutableArray(onCpu.bytes.ToArray()));
    }

    /// <summary>Token ids (b) as an int64 (b, 1) payload.</summary>
    public static TensorPayload OfIds(IReadOnlyCollection<long> ids) =>
        new(torch.ScalarType.Int64, [ids.Count, 1], ImmutableCollectionsMarshal.AsImmutableArray(MemoryMarshal.AsBytes(ids.ToArray().AsSpan()).ToArray()));

    /// <summary>A new CPU tensor holding the values (the caller owns it).</summary>
    public torch.Tensor ToTensor()
    {
        var tensor = torch.empty(Shape.AsSpan().ToArray(), Dtype);
        if (tensor.NumberOfElements * tensor.ElementSize != Bytes.Length)
        {
            tensor.Dispose();
            throw new InvalidDataException($"a {Dtype} tensor of shape [{string.Join(", ", Shape)}] needs {ElementCount * tensor.ElementSize} bytes, the payload has {Bytes.Length}");
        }

        Bytes.AsSpan().CopyTo(tensor.bytes);
        return tensor;
    }

    /// <summary>The int64 values (token ids).</summary>
    public long[] ToIds() => Dtype == torch.ScalarType.Int64
        ? MemoryMarshal.Cast<byte, long>(Bytes.AsSpan()).ToArray()
        : throw new InvalidDataException($"token ids must be int64, the payload is {Dtype}");

    public bool Equals(TensorPayload? other) =>
        other is not null && Dtype == other.Dtype && Shape.AsSpan().SequenceEqual(other.Shape.AsSpan()) && Bytes.AsSpan().SequenceEqual(other.Bytes.AsSpan());

    public override int GetHashCode() => HashCode.Combine(Dtype, Shape.Length, Bytes.Length);
}

/// <summary>
/// The input of token <see cref="Token"/>, GPU batch <see cref="Batch"/> at a pipeline stage's first layer: the (b, s, h)
/// hidden state the stage before computed, or for the first stage the (b, 1) token ids the last stage sampled at token
/// Token - 1.
/// </summary>
public sealed record StageTensor(int Token, int Batch, TensorPayload Payload);

/// <summary>A block's run that is one stage of a pipeline over several nodes: its first layer reads what other stages send, its last layer's output leaves.</summary>
public interface IStageRun : IPipelineRun
{
    /// <summary>Hands over an input of the stage's first layer (before the dispatcher lets the part that reads it start).</summary>
    void Deliver(StageTensor input);

    /// <summary>The (b, s, h) output the stage's last layer stored at token i, GPU batch k (not the last stage: that one writes token ids).</summary>
    StageTensor TakeOutput(int token, int batch);
}
