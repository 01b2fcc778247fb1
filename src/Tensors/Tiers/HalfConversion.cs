namespace FlexGen.Tensors.Tiers;

using System.Runtime.Intrinsics;

/// <summary>
/// float16 -> float32, exact (subnormals, infinities and NaN payloads included), vectorised. libtorch 2.10 widens
/// float16 on the CPU at 0.1-0.6 G values/s, slower than the disk delivers them; this runs at memory speed.
/// </summary>
internal static unsafe class HalfConversion
{
    /// <summary>
    /// Widens <paramref name="count"/> float16 values at <paramref name="source"/> into <paramref name="destination"/>.
    /// In place works: the source may lie in the destination's memory when it starts at least
    /// <paramref name="count"/> * 2 bytes after it (a float32 buffer whose upper half holds the float16 values): the
    /// values are widened front to back, each group loaded before its results are stored, and a store never reaches
    /// values not yet loaded.
    /// </summary>
    public static void ToSingle(ushort* source, float* destination, long count)
    {
        long n = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; n + 16 <= count; n += 16)
            {
                var (low, high) = Vector256.Widen(Vector256.Load(source + n)); // 2 x 8 uint
                Widen(low).AsSingle().Store(destination + n);
                Widen(high).AsSingle().Store(destination + n + 8);
            }
        }

        for (; n < count; n++)
        {
            // The vector recipe on one value, so a value widens to the same bits wherever it lies (NaN payloads too).
            destination[n] = Widen(Vector256.Create((uint)source[n])).AsSingle().ToScalar();
        }
    }

    /// <summary>
    /// Widens the <paramref name="count"/> float16 values held in the upper half of the float32 buffer
    /// <paramref name="target"/> (bytes [2 * count, 4 * count)) into the whole buffer, on up to <paramref name="threads"/>
    /// threads (the caller's and the thread pool's). In stages: each widens the first half of the values left, whose
    /// results land below every value not yet widened, so its pieces run in parallel without a store reaching a value
    /// another piece still has to load; the last few values go front to back on the caller (<see cref="ToSingle"/> in place).
    /// </summary>
    public static void WidenInPlace(float* target, long count, int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        var half = (ushort*)((byte*)target + (2 * count));
        long done = 0;
        for (long left = count; threads > 1 && left >= ParallelStageMinimum; left = count - done)
        {
            long stage = left / 2, start = done, piece = (stage + threads - 1) / threads;
            var (from, to) = ((nint)half, (nint)target);
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, p =>
            {
                long first = start + (p * piece), end = Math.Min(start + stage, first + piece);
                if (end > first) ToSingle((ushort*)from + first, (float*)to + first, end - first);
            });
            done += stage;
        }

        ToSingle(half + done, target + done, count - done);
    }

    // Below this many values left, a parallel stage costs more in hand-offs than it saves.
    private const long ParallelStageMinimum = 1 << 16;

    // The bit recipe of F. Giesen's half_to_float: move exponent and mantissa into place and rebias; then Inf/NaN get
    // the full exponent, and zeros/subnormals are renormalised by subtracting 2^-14 as a float.
    private static Vector256<uint> Widen(Vector256<uint> h)
    {
        var shiftedExponent = Vector256.Create(0x7C00u << 13);
        var bits = (h & Vector256.Create(0x7FFFu)) << 13;
        var exponent = bits & shiftedExponent;
        bits += Vector256.Create((127u - 15u) << 23);
        var infNan = Vector256.Equals(exponent, shiftedExponent);
        var small = Vector256.Equals(exponent, Vector256<uint>.Zero);
        bits += infNan & Vector256.Create((128u - 16u) << 23);
        var renormalised = ((bits + Vector256.Create(1u << 23)).AsSingle() - Vector256.Create(113u << 23).AsSingle()).AsUInt32();
        bits = Vector256.ConditionalSelect(small, renormalised, bits);
        return bits | ((h & Vector256.Create(0x8000u)) << 16);
    }
}
