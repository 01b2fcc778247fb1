namespace FlexGen.Tensors.Layers;

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Tiers;

/// <summary>What the engine's own CPU kernels (<see cref="SmallRowLinear"/>, <see cref="CpuDecodeAttention"/>) need.</summary>
internal static class CpuKernels
{
    /// <summary>float32 lanes of a 256-bit vector: the kernels take their inputs 8 at a time.</summary>
    public const int Lanes = 8;

    /// <summary>
    /// True when the CPU has AVX2 and FMA, libtorch's libgomp was found (the kernels run on its OpenMP team,
    /// <see cref="OpenMpTeams.Parallel"/>) and TensorMemory can read a tensor's data pointer.
    /// </summary>
    public static bool Available => Avx2.IsSupported && Fma.IsSupported && OpenMpTeams.Available && TensorMemory.AddressAvailable;
}

/// <summary>
/// An element type the kernels read (a weight, a cache): its size, and 8 consecutive elements from element i of a
/// vector as float32 lanes. Loads are inlined: as a call (the JIT's inliner found float16's too large) every accumulator
/// of the kernel's loop went through memory, 3.5x slower.
/// </summary>
internal unsafe interface IVectorElement
{
    static abstract int Size { get; }

    static abstract Vector256<float> Load(byte* vector, int i);
}

internal unsafe struct Float32Element : IVectorElement
{
    public static int Size => sizeof(float);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(byte* vector, int i) => Avx.LoadVector256((float*)vector + i);
}

/// <summary>bfloat16 is the upper half of a float32: widened to 32 bits and shifted up.</summary>
internal unsafe struct BFloat16Element : IVectorElement
{
    public static int Size => sizeof(ushort);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(byte* vector, int i) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)vector + i), 16).AsSingle();
}

/// <summary>
/// float16 widened exactly: its exponent and mantissa moved into float32's place and scaled by 2^112 (the exponent biases'
/// difference, which also makes float16's subnormals float32 normals); infinity and NaN get float32's top exponent.
/// </summary>
internal unsafe struct Float16Element : IVectorElement
{
    public static int Size => sizeof(ushort);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(byte* vector, int i)
    {
        // Sign-extended, bits 15-31 all hold the sign, so float32's sign bit is one mask away: a shift fewer than from a
        // zero-extended load, 0.407 -> 0.335 ms for 4 M values on one thread of the Zen 5 VM.
        var bits = Avx2.ConvertToVector256Int32((short*)vector + i); // (8)
        var magnitude = bits & Vector256.Create(0x7FFF);
        var widened = Avx2.ShiftLeftLogical(magnitude, 13).AsSingle() * Vector256.Create(0x77800000).AsSingle(); // * 2^112
        var special = Avx2.CompareGreaterThan(magnitude, Vector256.Create(0x7BFF)) & Vector256.Create(0x7F800000);
        var sign = bits & Vector256.Create(int.MinValue);
        return (widened.AsInt32() | special | sign).AsSingle();
    }
}
