namespace FlexGen.Tensors.Layers;

using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Dense decode attention over a float32 cache in CPU memory, row by row in one pass: each cache row's scores (its
/// query heads against every cached key and the new one), the masked softmax and the weighted sum of the values, an
/// AVX2 kernel on libtorch's OpenMP team (<see cref="OpenMpTeams.Parallel"/>). Decode attention reads the whole cache
/// and does two multiply-adds per value read, so it is a stream of the cache; libtorch's batched products over the
/// cache's (rows, head_dim, positions) views ran at 8-15 GB/s (OPT-125m, 32 sequences: 1.8 ms a layer at 72 positions,
/// 6.9 ms at 512), well under the memory's 26-28 GB/s, and each step also made the scores, masked copy and
/// probabilities as tensors. Results are the same softmax and sums in float32 as <see cref="SegmentAttention"/>'s
/// products; only the order of the sums differs.
/// </summary>
internal static unsafe class CpuDecodeAttention
{
    private const int Lanes = 8; // float32 lanes of a 256-bit vector

    // Positions ahead that each pass asks the cache for (4 KiB in a row-major cache of head_dim 64): 10-20% faster on
    // OPT-125m's shapes at 512 positions than the hardware prefetcher alone.
    private const int PrefetchPositions = 16;

    private const int FloatsPerLine = 16; // a 64-byte cache line

    /// <summary>True when the CPU has AVX2 and FMA and libtorch's libgomp and TorchSharp's data pointer were found.</summary>
    public static bool Available => Avx2.IsSupported && Fma.IsSupported && OpenMpTeams.Available && TensorMemory.AddressAvailable;

    /// <summary>
    /// Whether the kernel takes these operands (whatever this machine has): float32 on the CPU, head_dim a multiple of 8
    /// with each key and value vector contiguous (any position and row strides: FlexGen's order or row-major), at most
    /// int-sized counts.
    /// </summary>
    internal static bool Takes(Tensor query, IReadOnlyList<(Tensor Key, Tensor Value)> parts)
    {
        long headDim = query.shape[^1];
        if (!IsCpuFloat32(query) || query.dim() != 3 || headDim == 0 || headDim % Lanes != 0 || query.numel() > int.MaxValue) return false;
        foreach (var (key, value) in parts)
        {
            foreach (var cache in new[] { key, value })
            {
                if (!IsCpuFloat32(cache) || cache.dim() != 3 || cache.shape[2] != headDim || cache.stride(2) != 1) return false;
            }

            if (value.shape[0] != key.shape[0] || value.shape[1] != key.shape[1]) return false;
        }

        return true;
    }

    /// <summary>
    /// Attention values (R, g, d) in float32 for <paramref name="query"/> (R, g, d): cache row r (its g query heads) over
    /// the cached positions of the part holding it and the new token last. <paramref name="parts"/> hold consecutive cache
    /// rows in order, each key and value (past, rows, d); <paramref name="newKey"/> and <paramref name="newValue"/> are
    /// (R, d); <paramref name="mask"/> is (R / kvHeads, past + 1), true = attend; a masked score is
    /// <paramref name="maskValue"/> before the softmax, as <c>masked_fill</c> makes it. Null where the kernel does not take
    /// the operands or is not <see cref="Available"/>: the caller multiplies with libtorch.
    /// </summary>
    public static Tensor? TryAttend(Tensor query, Tensor newKey, Tensor newValue, Tensor mask,
        IReadOnlyList<(Tensor Key, Tensor Value)> parts, int kvHeads, double maskValue)
    {
        if (parts.Count == 0 || !Takes(query, parts) || !Available) return null;
        long rows = query.shape[0], groups = query.shape[1], headDim = query.shape[2], past = parts[0].Key.shape[0];
        if (parts.Any(p => p.Key.shape[0] != past) || parts.Sum(p => p.Key.shape[1]) != rows
            || mask.shape[0] * kvHeads != rows || mask.shape[1] != past + 1 || (past + 1) * groups > int.MaxValue)
        {
            return null;
        }

        using var scope = NewDisposeScope();
        var q = query.contiguous(); // (R, g, d)
        var k = newKey.reshape(rows, headDim).to(ScalarType.Float32).contiguous(); // (R, d)
        var v = newValue.reshape(rows, headDim).to(ScalarType.Float32).contiguous(); // (R, d)
        var allowed = mask.to(ScalarType.Bool).contiguous(); // (R / kvHeads, past + 1)
        var output = torch.empty(rows, groups, headDim, ScalarType.Float32); // (R, g, d)
        var segments = stackalloc Segment[parts.Count];
        long start = 0;
        for (int i = 0; i < parts.Count; i++)
        {
            var (key, value) = parts[i];
            segments[i] = new Segment
            {
                Keys = (float*)TensorMemory.Address(key),
                Values = (float*)TensorMemory.Address(value),
                KeyPosition = key.stride(0),
                KeyRow = key.stride(1),
                ValuePosition = value.stride(0),
                ValueRow = value.stride(1),
                FirstRow = start,
                Rows = key.shape[1],
            };
            start += key.shape[1];
        }

        var job = new Job
        {
            Query = (float*)TensorMemory.Address(q),
            NewKey = (float*)TensorMemory.Address(k),
            NewValue = (float*)TensorMemory.Address(v),
            Mask = (byte*)TensorMemory.Address(allowed),
            Output = (float*)TensorMemory.Address(output),
            Segments = segments,
            SegmentCount = parts.Count,
            Rows = (int)rows,
            Groups = (int)groups,
            HeadDim = (int)headDim,
            Past = (int)past,
            KvHeads = kvHeads,
            MaskValue = (float)maskValue,
        };
        OpenMpTeams.Parallel(&RunOnTeam, &job);
        return output.MoveToOuterDisposeScope();
    }

    private static bool IsCpuFloat32(Tensor t) => t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU;

    // One part of the cache: rows [FirstRow, FirstRow + Rows) of the run, element strides between positions and rows.
    private struct Segment
    {
        public float* Keys;
        public float* Values;
        public long KeyPosition;
        public long KeyRow;
        public long ValuePosition;
        public long ValueRow;
        public long FirstRow;
        public long Rows;
    }

    // One attention call, read by every thread of the team while the caller waits in Parallel.
    private struct Job
    {
        public float* Query;
        public float* NewKey;
        public float* NewValue;
        public byte* Mask;
        public float* Output;
        public Segment* Segments;
        public int SegmentCount;
        public int Rows;
        public int Groups;
        public int HeadDim;
        public int Past;
        public int KvHeads;
        public float MaskValue;
    }

    // Each thread of the team takes its share of the cache rows, with its own buffer of probabilities.
    [UnmanagedCallersOnly]
    private static void RunOnTeam(void* data)
    {
        var job = (Job*)data;
        var (first, end) = OpenMpTeams.ShareOf(job->Rows);
        if (first >= end) return;
        int positions = job->Past + 1;
        var probabilities = (float*)NativeMemory.AlignedAlloc((nuint)((long)job->Groups * positions * sizeof(float)), 64);
        try
        {
            var segment = job->Segments;
            for (int r = first; r < end; r++)
            {
                while (r >= segment->FirstRow + segment->Rows) segment++;
                Row(job, segment, r, probabilities);
            }
        }
        finally
        {
            NativeMemory.AlignedFree(probabilities);
        }
    }

    // Cache row r: scores of its g query heads over the past positions and the new token, softmax, weighted values.
    private static void Row(Job* job, Segment* segment, int r, float* probabilities)
    {
        int d = job->HeadDim, g = job->Groups, past = job->Past, positions = past + 1;
        long local = r - segment->FirstRow;
        float* keys = segment->Keys + (local * segment->KeyRow);
        float* values = segment->Values + (local * segment->ValueRow);
        float* newKey = job->NewKey + ((long)r * d);
        float* newValue = job->NewValue + ((long)r * d);
        byte* allowed = job->Mask + ((long)(r / job->KvHeads) * positions);
        float* output = job->Output + ((long)r * g * d);
        for (int h = 0; h < g; h++)
        {
            float* q = job->Query + (((long)r * g) + h) * d;
            float* p = probabilities + ((long)h * positions);
            Scores(q, keys, segment->KeyPosition, past, d, p);
            p[past] = Dot(q, newKey, d);
            for (int j = 0; j < positions; j++)
            {
                if (allowed[j] == 0) p[j] = job->MaskValue;
            }

            Softmax(p, positions);
        }

        for (int h = 0; h < g; h++)
        {
            float* y = output + ((long)h * d), p = probabilities + ((long)h * positions);
            int c = 0;
            for (; c + (8 * Lanes) <= d; c += 8 * Lanes) WeightedSum64(p, values + c, segment->ValuePosition, past, y + c);
            for (; c < d; c += Lanes) WeightedSum8(p, values + c, segment->ValuePosition, past, y + c);
            AddScaled(y, p[past], newValue, d);
        }
    }

    // y[0, 64) = sum over j < count of p[j] * values[j][0, 64): the 64 sums stay in registers over the positions.
    private static void WeightedSum64(float* p, float* values, long stride, int count, float* y)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int j = 0; j < count; j++)
        {
            var pj = Vector256.Create(p[j]);
            float* v = values + (j * stride);
            if (j + PrefetchPositions < count) Prefetch(v + (PrefetchPositions * stride), stride, 1, 8 * Lanes);
            a0 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v), a0);
            a1 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + Lanes), a1);
            a2 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (2 * Lanes)), a2);
            a3 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (3 * Lanes)), a3);
            a4 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (4 * Lanes)), a4);
            a5 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (5 * Lanes)), a5);
            a6 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (6 * Lanes)), a6);
            a7 = Fma.MultiplyAdd(pj, Avx.LoadVector256(v + (7 * Lanes)), a7);
        }

        Avx.Store(y, a0);
        Avx.Store(y + Lanes, a1);
        Avx.Store(y + (2 * Lanes), a2);
        Avx.Store(y + (3 * Lanes), a3);
        Avx.Store(y + (4 * Lanes), a4);
        Avx.Store(y + (5 * Lanes), a5);
        Avx.Store(y + (6 * Lanes), a6);
        Avx.Store(y + (7 * Lanes), a7);
    }

    // The same for 8 values (head dims that are not a multiple of 64: their last few).
    private static void WeightedSum8(float* p, float* values, long stride, int count, float* y)
    {
        Vector256<float> a = default;
        for (int j = 0; j < count; j++) a = Fma.MultiplyAdd(Vector256.Create(p[j]), Avx.LoadVector256(values + (j * stride)), a);
        Avx.Store(y, a);
    }

    // p[j] = q . keys[j] for j < count, eight positions at a time: eight independent sums keep both FMA units busy
    // (one sum waits out each FMA's latency).
    private static void Scores(float* q, float* keys, long stride, int count, int d, float* p)
    {
        int j = 0;
        for (; j + 8 <= count; j += 8)
        {
            float* k0 = keys + (j * stride);
            if (j + PrefetchPositions + 8 <= count) Prefetch(k0 + (PrefetchPositions * stride), stride, 8, d);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int c = 0; c < d; c += Lanes)
            {
                var qv = Avx.LoadVector256(q + c);
                float* k = k0 + c;
                a0 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k), a0);
                a1 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + stride), a1);
                a2 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (2 * stride)), a2);
                a3 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (3 * stride)), a3);
                a4 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (4 * stride)), a4);
                a5 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (5 * stride)), a5);
                a6 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (6 * stride)), a6);
                a7 = Fma.MultiplyAdd(qv, Avx.LoadVector256(k + (7 * stride)), a7);
            }

            p[j] = Vector256.Sum(a0);
            p[j + 1] = Vector256.Sum(a1);
            p[j + 2] = Vector256.Sum(a2);
            p[j + 3] = Vector256.Sum(a3);
            p[j + 4] = Vector256.Sum(a4);
            p[j + 5] = Vector256.Sum(a5);
            p[j + 6] = Vector256.Sum(a6);
            p[j + 7] = Vector256.Sum(a7);
        }

        for (; j < count; j++) p[j] = Dot(q, keys + (j * stride), d);
    }

    // Asks for the lines of `positions` vectors of `length` floats, `stride` apart.
    private static void Prefetch(float* first, long stride, int positions, int length)
    {
        for (int i = 0; i < positions; i++)
        {
            for (int c = 0; c < length; c += FloatsPerLine) Sse.Prefetch0(first + (i * stride) + c);
        }
    }

    private static float Dot(float* a, float* b, int d)
    {
        Vector256<float> sum = default;
        for (int c = 0; c < d; c += Lanes) sum = Fma.MultiplyAdd(Avx.LoadVector256(a + c), Avx.LoadVector256(b + c), sum);
        return Vector256.Sum(sum);
    }

    // In place: p = exp(p - max) / sum, as libtorch's softmax.
    private static void Softmax(float* p, int count)
    {
        var span = new Span<float>(p, count);
        float max = float.NegativeInfinity;
        foreach (float x in span) max = Math.Max(max, x);
        int j = 0;
        var sums = Vector256<float>.Zero;
        var shift = Vector256.Create(max);
        for (; j + Lanes <= count; j += Lanes)
        {
            var e = Vector256.Exp(Avx.LoadVector256(p + j) - shift);
            Avx.Store(p + j, e);
            sums += e;
        }

        float sum = Vector256.Sum(sums);
        for (; j < count; j++)
        {
            p[j] = MathF.Exp(p[j] - max);
            sum += p[j];
        }

        float scale = 1f / sum;
        foreach (ref float x in span) x *= scale;
    }

    // y += a * x over d values.
    private static void AddScaled(float* y, float a, float* x, int d)
    {
        var av = Vector256.Create(a);
        for (int c = 0; c < d; c += Lanes) Avx.Store(y + c, Fma.MultiplyAdd(av, Avx.LoadVector256(x + c), Avx.LoadVector256(y + c)));
    }
}
