namespace FlexGen.Tensors.Layers;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>What masked attention scores are filled with before the softmax.</summary>
public enum MaskFill
{
    /// <summary>-1e4, as FlexGen (representable in float16 and bfloat16).</summary>
    FlexGen,

    /// <summary>The compute dtype's most negative finite value, as Hugging Face.</summary>
    DtypeMin,
}

/// <summary>
/// How layer math computes: the dtype weights and activations are converted to at use (weights are stored
/// float16) and the attention mask fill. float32 or bfloat16 on CPU; float16 (or either of those) on CUDA.
/// float16 on CPU is refused: libtorch's CPU float16 GEMM runs at about 1 GFLOP/s (PLATFORM.md).
/// </summary>
public sealed record ComputeSettings
{
    public ComputeSettings(ScalarType dtype, MaskFill maskFill = MaskFill.FlexGen)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException(
                $"Compute dtype {dtype} is not supported: use Float32 or BFloat16 (CPU) or Float16 (CUDA).", nameof(dtype));
        }

        Dtype = dtype;
        MaskFill = maskFill;
    }

    /// <summary>Exact CPU reference compute.</summary>
    public static ComputeSettings Float32 { get; } = new(ScalarType.Float32);

    /// <summary>Fast CPU compute.</summary>
    public static ComputeSettings BFloat16 { get; } = new(ScalarType.BFloat16);

    /// <summary>CUDA compute, as FlexGen.</summary>
    public static ComputeSettings Float16 { get; } = new(ScalarType.Float16);

    public ScalarType Dtype { get; }

    public MaskFill MaskFill { get; }

    /// <summary>The value masked attention scores get.</summary>
    public double MaskValue => MaskFill switch
    {
        MaskFill.FlexGen => -1e4,
        _ => Dtype switch
        {
            ScalarType.Float32 => float.MinValue,
            ScalarType.BFloat16 => -3.3895313892515355e38,
            _ => -65504.0,
        },
    };

    /// <summary>Throws <see cref="UnsupportedComputeException"/> when this dtype must not run on <paramref name="device"/>.</summary>
    public void EnsureSupportedOn(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.type == DeviceType.CPU && Dtype == ScalarType.Float16)
        {
            throw new UnsupportedComputeException(
                "Compute dtype Float16 is refused on the CPU: libtorch's CPU float16 matmul runs at about 1 GFLOP/s. " +
                "Compute in Float32 (exact) or BFloat16 (fast) on the CPU; Float16 is for CUDA.");
        }
    }
}

/// <summary>A compute dtype asked for on a device where it must not run.</summary>
public sealed class UnsupportedComputeException(string message) : NotSupportedException(message);
