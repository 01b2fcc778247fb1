namespace FlexGen.Tensors.Layers;

using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;
using static FlexGen.Tensors.Layers.CpuKernels;

/// <summary>
/// Dense decode attention over a float32, bfloat16 or float16 cache in CPU memory, row by row in one pass: each cache row's scores (its
/// query heads against every cached key and the new one), the masked softmax and the weighted sum of the values, an
/// AVX2 kernel on libtorch's OpenMP team (<see cref="OpenMpTeams.Parallel"/>). Decode attention reads the whole cache
/// and does two multiply-adds per value read, so it is a stream of the cache; libtorch's batched products over the
/// cache's (rows, head_dim, positions) views ran at 8-15 GB/s (OPT-125m, 32 sequences: 1.8 ms a layer at 72 positions,
/// 6.9 ms at 512), well under the memory's 26-28 GB/s, and each step also made the scores, masked copy and
/// probabilities as tensors. A float16 cache (FlexGen's, kept where a float32 one does not fit or part of it is on
/// disk, and under cpu_cache_compute with CUDA) is widened in registers as it streams; libtorch widened it whole at every
/// step at 106-138 M values/s; a bfloat16 cache (a bfloat16 compute's) likewise. Results are the same softmax and sums in float32 as <see cref="SegmentAttention"/>'s
/// products (bfloat16 and float16 entries widened exactly); only the order of the sums differs.
/// </summary>
internal static unsafe class CpuDecodeAttention
{
    // Positions ahead that each pass asks the cache for (4 KiB in a row-major cache of head_dim 64): 10-20% faster on
    // OPT-125m's shapes at 512 positions than the hardware prefetcher alone.
    private const int PrefetchPositions = 16;

    private const int CacheLine = 64; // bytes

    // A row's keys up to this size (short contexts): its passes start on the next row's first positions, asked for while
    // this row is attended. Measured (2-core Zen 5 VM, 8192 rows of head_dim 64, kernel alone, medians): bfloat16 at 20
    // positions 4.7 -> 3.1 ms, 40 5.6 -> 5.1, 64 7.6 -> 6.7; float32 at 20 4.5 -> 3.9, at 40 even, at 64 (16 KiB) 9.9-10.1
    // -> 10.5-10.8, where the rows' own prefetch already streams.
    private const int NextRowPrefetchBytes = 8192;

    /// <summary>True when the CPU has AVX2 and FMA and libtorch's libgomp and TorchSharp's data pointer were found.</summary>
    public static bool Available => CpuKernels.Available;

    /// <summary>
    /// Whether the kernel takes these operands (whatever this machine has): a float32 query on the CPU, the cache on the
    /// CPU in float32, bfloat16 or float16 (one dtype for all parts), head_dim a multiple of 8 with each key and value vector
    /// contiguous (any position and row strides: FlexGen's order or row-major), at most int-sized counts.
    /// </summary>
    internal static bool Takes(Tensor query, IReadOnlyList<(Tensor Key, Tensor Value)> parts)
    {
        long headDim = query.shape[^1];
        if (query.dtype != ScalarType.Float32 || query.device_type != DeviceType.CPU || query.dim() != 3 || headDim == 0
            || headDim % Lanes != 0 || query.numel() > int.MaxValue || parts.Count == 0)
        {
            return false;
        }

        var dtype = parts[0].Key.dtype;
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16)) return false;
        foreach (var (key, value) in parts)
        {
            foreach (var cache in new[] { key, value })
            {
                if (cache.dtype != dtype || cache.device_type != DeviceType.CPU || cache.dim() != 3 || cache.shape[2] != headDim || cache.stride(2) != 1) return false;
            }

            if (value.shape[0] != key.shape[0] || value.shape[1] != key.shape[1]) return false;
        }

        return true;
    }

    /// <summary>
    /// Attention values (R, g, d) in float32 for <paramref name="query"/> (R, g, d): cache row r (its g query heads) over
    /// the cached positions of the part holding it and the new token last. <paramref name="parts"/> hold consecutive cache
    /// rows in order, each key and value (past, rows, d) in float32, bfloat16 or float16; <paramref name="newKey"/> and <paramref name="newValue"/> are
    /// (R, d); <paramref name="mask"/> is (R / kvHeads, past + 1), true = attend; a masked score is
    /// <paramref name="maskValue"/> before the softmax, as <c>masked_fill</c> makes it. Null where the kernel does not take
    /// the operands or is not <see cref="Available"/>: the caller multiplies with libtorch.
    /// </summary>
    public static Tensor? TryAttend(Tensor query, Tensor newKey, Tensor newValue, Tensor mask,
        IReadOnlyList<(Tensor Key, Tensor Value)> parts, int kvHeads, double maskValue)
    {
        if (!Takes(query, parts) || !Available) return null;
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
        // Each team thread's probabilities, made here so nothing is allocated on the team (a failure there ends the process).
        var probabilities = torch.empty(Math.Max(1, torch.get_num_threads()), groups * (past + 1), ScalarType.Float32); // (threads, g * (t + 1))
        var segments = stackalloc Segment[parts.Count];
        long start = 0;
        for (int i = 0; i < parts.Count; i++)
        {
            var (key, value) = parts[i];
            segments[i] = new Segment
            {
                Keys = (byte*)TensorMemory.Address(key),
                Values = (byte*)TensorMemory.Address(value),
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
            Probabilities = (float*)TensorMemory.Address(probabilities),
            Segments = segments,
            CacheDtype = parts[0].Key.dtype,
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

    // One part of the cache: rows [FirstRow, FirstRow + Rows) of the run, element strides between positions and rows.
    private struct Segment
    {
        public byte* Keys;
        public byte* Values;
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
        public float* Probabilities;
        public Segment* Segments;
        public int SegmentCount;
        public ScalarType CacheDtype;
        public int Rows;
        public int Groups;
        public int HeadDim;
        public int Past;
        public int KvHeads;
        public float MaskValue;
    }

    // Each thread of the team takes its share of the cache rows, with its own row of probabilities.
    [UnmanagedCallersOnly]
    private static void RunOnTeam(void* data)
    {
        var job = (Job*)data;
        var (first, end) = OpenMpTeams.ShareOf(job->Rows);
        var probabilities = job->Probabilities + ((long)OpenMpTeams.Member().Thread * job->Groups * (job->Past + 1));
        var segment = job->Segments;
        for (int r = first; r < end; r++)
        {
            while (r >= segment->FirstRow + segment->Rows) segment++;
            switch (job->CacheDtype)
            {
                case ScalarType.Float16: Row<Float16Element>(job, segment, r, probabilities); break;
                case ScalarType.BFloat16: Row<BFloat16Element>(job, segment, r, probabilities); break;
                default: Row<Float32Element>(job, segment, r, probabilities); break;
            }
        }
    }

    // Cache row r: scores of its g query heads over the past positions and the new token, softmax, weighted values.
    private static void Row<TCache>(Job* job, Segment* segment, int r, float* probabilities)
        where TCache : struct, IVectorElement
    {
        int d = job->HeadDim, g = job->Groups, past = job->Past, positions = past + 1;
        long local = r - segment->FirstRow;
        byte* keys = segment->Keys + (local * segment->KeyRow * TCache.Size);
        byte* values = segment->Values + (local * segment->ValueRow * TCache.Size);
        float* newKey = job->NewKey + ((long)r * d);
        float* newValue = job->NewValue + ((long)r * d);
        byte* allowed = job->Mask + ((long)(r / job->KvHeads) * positions);
        float* output = job->Output + ((long)r * g * d);
        if (local + 1 < segment->Rows && (long)past * d * TCache.Size <= NextRowPrefetchBytes)
        {
            // The next row's first positions, which this row's passes do not ask for: at short contexts every row
            // started on cache misses.
            int ahead = Math.Min(past, PrefetchPositions);
            Prefetch(keys + (segment->KeyRow * TCache.Size), segment->KeyPosition * TCache.Size, ahead, d * TCache.Size);
            Prefetch(values + (segment->ValueRow * TCache.Size), segment->ValuePosition * TCache.Size, ahead, d * TCache.Size);
        }

        for (int h = 0; h < g; h++)
        {
            float* q = job->Query + (((long)r * g) + h) * d;
            float* p = probabilities + ((long)h * positions);
            Scores<TCache>(q, keys, segment->KeyPosition, past, d, p);
            p[past] = Dot<Float32Element>(q, (byte*)newKey, d);
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
            for (; c + (8 * Lanes) <= d; c += 8 * Lanes) WeightedSum64<TCache>(p, values + (c * TCache.Size), segment->ValuePosition, past, y + c);
            for (; c < d; c += Lanes) WeightedSum8<TCache>(p, values + (c * TCache.Size), segment->ValuePosition, past, y + c);
            AddScaled(y, p[past], newValue, d);
        }
    }

    // y[0, 64) = sum over j < count of p[j] * values[j][0, 64) (stride in elements): the 64 sums stay in registers.
    private static void WeightedSum64<TCache>(float* p, byte* values, long stride, int count, float* y)
        where TCache : struct, IVectorElement
    {
        long step = stride * TCache.Size;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int j = 0; j < count; j++)
        {
            var pj = Vector256.Create(p[j]);
            byte* v = values + (j * step);
            if (j + PrefetchPositions < count) Prefetch(v + (PrefetchPositions * step), step, 1, 8 * Lanes * TCache.Size);
            a0 = Fma.MultiplyAdd(pj, TCache.Load(v, 0), a0);
            a1 = Fma.MultiplyAdd(pj, TCache.Load(v, Lanes), a1);
            a2 = Fma.MultiplyAdd(pj, TCache.Load(v, 2 * Lanes), a2);
            a3 = Fma.MultiplyAdd(pj, TCache.Load(v, 3 * Lanes), a3);
            a4 = Fma.MultiplyAdd(pj, TCache.Load(v, 4 * Lanes), a4);
            a5 = Fma.MultiplyAdd(pj, TCache.Load(v, 5 * Lanes), a5);
            a6 = Fma.MultiplyAdd(pj, TCache.Load(v, 6 * Lanes), a6);
            a7 = Fma.MultiplyAdd(pj, TCache.Load(v, 7 * Lanes), a7);
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
    private static void WeightedSum8<TCache>(float* p, byte* values, long stride, int count, float* y)
        where TCache : struct, IVectorElement
    {
        long step = stride * TCache.Size;
        Vector256<float> a = default;
        for (int j = 0; j < count; j++) a = Fma.MultiplyAdd(Vector256.Create(p[j]), TCache.Load(values + (j * step), 0), a);
        Avx.Store(y, a);
    }

    // p[j] = q . keys[j] for j < count (stride in elements), eight positions at a time: eight independent sums keep both
    // FMA units busy (one sum waits out each FMA's latency).
    private static void Scores<TCache>(float* q, byte* keys, long stride, int count, int d, float* p)
        where TCache : struct, IVectorElement
    {
        long step = stride * TCache.Size;
        int j = 0;
        for (; j + 8 <= count; j += 8)
        {
            byte* k0 = keys + (j * step);
            if (j + PrefetchPositions + 8 <= count) Prefetch(k0 + (PrefetchPositions * step), step, 8, d * TCache.Size);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int c = 0; c < d; c += Lanes)
            {
                var qv = Avx.LoadVector256(q + c);
                byte* k = k0 + (c * TCache.Size);
                a0 = Fma.MultiplyAdd(qv, TCache.Load(k, 0), a0);
                a1 = Fma.MultiplyAdd(qv, TCache.Load(k + step, 0), a1);
                a2 = Fma.MultiplyAdd(qv, TCache.Load(k + (2 * step), 0), a2);
                a3 = Fma.MultiplyAdd(qv, TCache.Load(k + (3 * step), 0), a3);
                a4 = Fma.MultiplyAdd(qv, TCache.Load(k + (4 * step), 0), a4);
                a5 = Fma.MultiplyAdd(qv, TCache.Load(k + (5 * step), 0), a5);
                a6 = Fma.MultiplyAdd(qv, TCache.Load(k + (6 * step), 0), a6);
                a7 = Fma.MultiplyAdd(qv, TCache.Load(k + (7 * step), 0), a7);
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

        for (; j < count; j++) p[j] = Dot<TCache>(q, keys + (j * step), d);
    }

    // Asks for the cache lines of `positions` runs of `bytes`, `step` bytes apart.
    private static void Prefetch(byte* first, long step, int positions, int bytes)
    {
        for (int i = 0; i < positions; i++)
        {
            for (int c = 0; c < bytes; c += CacheLine) Sse.Prefetch0(first + (i * step) + c);
        }
    }

    // q . key over d values, the key in the cache's element type.
    private static float Dot<TCache>(float* q, byte* key, int d)
        where TCache : struct, IVectorElement
    {
        Vector256<float> sum = default;
        for (int c = 0; c < d; c += Lanes) sum = Fma.MultiplyAdd(Avx.LoadVector256(q + c), TCache.Load(key, c), sum);
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
