namespace FlexGen.Tensors.Tests.Layers;

using System.Runtime.Intrinsics.X86;
using FlexGen.Tensors.Diagnostics;
using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>The one-pass decode attention kernel over a float32 cache in CPU memory.</summary>
public sealed class CpuDecodeAttentionTests
{
    private const float MaskValue = -1e4f;

    [Fact]
    public void CpuDecodeAttention_should_be_available_wherever_the_cpu_has_avx2_and_fma()
    {
        Assert.Equal(Avx2.IsSupported && Fma.IsSupported, CpuDecodeAttention.Available);
    }

    [SkippableTheory]
    // kv heads, query heads per kv head, head_dim, past positions, rows per part, row-major cache, cache dtype, on a serial thread.
    [InlineData(12, 1, 64, 72, new[] { 96, 96, 96, 96 }, true, ScalarType.Float32, false)] // OPT-125m at 8 x 4: a part per GPU batch
    [InlineData(2, 1, 64, 13, new[] { 6 }, false, ScalarType.Float32, false)] // FlexGen's (seq, rows, d) order; positions not a multiple of 8
    [InlineData(4, 2, 128, 40, new[] { 4, 8 }, true, ScalarType.Float32, true)] // grouped queries (Llama), a head_dim of two 64-blocks
    [InlineData(2, 4, 80, 9, new[] { 2, 4 }, false, ScalarType.Float32, false)] // a head_dim of 64 + 16 (OPT-2.7B's 80)
    [InlineData(3, 1, 8, 1, new[] { 3 }, true, ScalarType.Float32, false)] // one cached position, the smallest head_dim
    [InlineData(12, 1, 64, 72, new[] { 48, 48 }, false, ScalarType.Float16, false)] // FlexGen's float16 cache
    [InlineData(4, 2, 80, 21, new[] { 8 }, true, ScalarType.Float16, true)]
    [InlineData(12, 1, 64, 72, new[] { 96, 96 }, true, ScalarType.BFloat16, false)] // a bfloat16 compute's cache
    [InlineData(4, 2, 128, 9, new[] { 8 }, false, ScalarType.BFloat16, true)]
    public void TryAttend_should_give_the_masked_softmax_attention_of_each_row(
        int kvHeads, int groups, int headDim, int past, int[] partRows, bool rowMajor, ScalarType cacheDtype, bool serialThread)
    {
        Skip.IfNot(CpuDecodeAttention.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        int rows = partRows.Sum(), batch = rows / kvHeads;
        var generator = new Generator(7);
        var query = randn(rows, groups, headDim, generator: generator); // (R, g, d)
        var newKey = randn(1, rows, headDim, generator: generator); // (1, R, d)
        var newValue = randn(1, rows, headDim, generator: generator);
        var parts = partRows.Select(r => (Cache(past, r, headDim, rowMajor, generator).to(cacheDtype), Cache(past, r, headDim, rowMajor, generator).to(cacheDtype))).ToArray();
        // Left padding on the first sequence, a gap in the last; every sequence attends its new token.
        var mask = ones(batch, past + 1, ScalarType.Bool);
        mask[0, TensorIndex.Slice(0, Math.Min(3, past))] = false;
        if (past > 2) mask[batch - 1, 1] = false;

        Tensor? fromSerial = null;
        if (serialThread)
        {
            var thread = new Thread(() =>
            {
                OpenMpTeams.KeepSerial();
                fromSerial = CpuDecodeAttention.TryAttend(query, newKey, newValue, mask, parts, kvHeads, MaskValue);
            });
            thread.Start();
            thread.Join();
        }

        using var serialResult = fromSerial;
        var values = serialThread ? fromSerial : CpuDecodeAttention.TryAttend(query, newKey, newValue, mask, parts, kvHeads, MaskValue);

        Assert.NotNull(values);
        Assert.Equal([(long)rows, groups, headDim], values.shape);
        var expected = Reference(query, newKey, newValue, mask, parts, kvHeads);
        var error = (values.to(ScalarType.Float64) - expected).abs().max().item<double>();
        Assert.True(error < 1e-5, $"max error {error}");
    }

    [SkippableFact]
    public void TryAttend_should_widen_every_float16_value_exactly()
    {
        Skip.IfNot(CpuDecodeAttention.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        // Every float16 bit pattern but NaNs as one cached value row each: zeros, subnormals, normals, infinities, both signs.
        var floats = Enumerable.Range(0, 1 << 16).Select(i => BitConverter.UInt16BitsToHalf((ushort)i)).Where(h => !Half.IsNaN(h))
            .Select(h => (float)h).ToArray(); // float16 values are float32 values exactly
        long rows = floats.Length / 8;
        var exact = tensor(floats).narrow(0, 0, rows * 8);
        var values = exact.to(ScalarType.Float16).view(1, rows, 8); // (1 position, rows, 8)
        // One cached position, its new token masked: each row's result is its cached value times a probability of 1.
        var mask = tensor(new[] { true, false }).expand(rows, 2);
        var result = CpuDecodeAttention.TryAttend(zeros(rows, 1, 8), zeros(1, rows, 8), zeros(1, rows, 8), mask,
            [(zeros(1, rows, 8, ScalarType.Float16), values)], kvHeads: 1, MaskValue)!;

        var expected = exact.view(rows, 1, 8);
        Assert.True(result.isfinite().eq(expected.isfinite()).all().item<bool>());
        Assert.True(result.eq(expected).all().item<bool>()); // infinities equal themselves; no NaN is left
    }

    [SkippableFact]
    public void TryAttend_should_weigh_a_fully_masked_row_evenly_as_masked_fill_and_softmax_do()
    {
        Skip.IfNot(CpuDecodeAttention.Available, "no AVX2/FMA on this CPU");
        using var scope = NewDisposeScope();
        var generator = new Generator(3);
        var query = randn(2, 1, 16, generator: generator);
        var newKey = randn(1, 2, 16, generator: generator);
        var newValue = randn(1, 2, 16, generator: generator);
        var parts = new[] { (Cache(5, 2, 16, true, generator), Cache(5, 2, 16, true, generator)) };
        var mask = zeros(1, 6, ScalarType.Bool);

        var values = CpuDecodeAttention.TryAttend(query, newKey, newValue, mask, parts, kvHeads: 2, MaskValue)!;

        // Every score is the mask value: the mean of the row's five cached values and its new one.
        var mean = cat([parts[0].Item2.permute(1, 0, 2), newValue.permute(1, 0, 2)], 1).mean([1]); // (2, d)
        Assert.True(values.squeeze(1).allclose(mean, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void TryAttend_should_leave_to_libtorch_what_its_kernel_does_not_take()
    {
        using var scope = NewDisposeScope();
        var query = randn(4, 1, 16);
        var cache = randn(3, 4, 16);
        Assert.True(CpuDecodeAttention.Takes(query, [(cache, cache)]));
        Assert.True(CpuDecodeAttention.Takes(query, [(cache.to(ScalarType.Float16), cache.to(ScalarType.Float16))])); // FlexGen's float16 cache
        Assert.True(CpuDecodeAttention.Takes(query, [(cache.to(ScalarType.BFloat16), cache.to(ScalarType.BFloat16))]));
        Assert.False(CpuDecodeAttention.Takes(query, [(cache.to(ScalarType.Float64), cache.to(ScalarType.Float64))]));
        Assert.False(CpuDecodeAttention.Takes(query, [(cache, cache.to(ScalarType.Float16))])); // keys and values in two dtypes
        Assert.False(CpuDecodeAttention.Takes(query.to(ScalarType.BFloat16), [(cache, cache)]));
        Assert.False(CpuDecodeAttention.Takes(randn(4, 1, 12), [(randn(3, 4, 12), randn(3, 4, 12))])); // head_dim not a multiple of 8
        Assert.False(CpuDecodeAttention.Takes(query, [(randn(3, 16, 4).transpose(1, 2), cache)])); // head_dim not contiguous
        Assert.False(CpuDecodeAttention.Takes(query, [(cache, randn(2, 4, 16))])); // keys and values of other lengths
        // Rows the parts do not cover, or a mask of another length: not taken.
        Assert.Null(CpuDecodeAttention.TryAttend(query, randn(1, 4, 16), randn(1, 4, 16), ones(4, 4, ScalarType.Bool), [(randn(3, 3, 16), randn(3, 3, 16))], 1, MaskValue));
        Assert.Null(CpuDecodeAttention.TryAttend(query, randn(1, 4, 16), randn(1, 4, 16), ones(4, 3, ScalarType.Bool), [(cache, cache)], 1, MaskValue));
    }

    [SkippableFact]
    public void TryAttend_should_leave_no_tensor_alive_but_its_result()
    {
        Skip.IfNot(CpuDecodeAttention.Available, "no AVX2/FMA on this CPU");
        using var query = randn(4, 1, 16);
        using var newKey = randn(1, 4, 16);
        using var newValue = randn(1, 4, 16);
        using var keys = randn(5, 4, 16);
        using var values = randn(5, 4, 16);
        using var mask = ones(2, 6, ScalarType.Bool);
        Tensor? result = null;
        Assert.Equal(1, LiveTensors.LeakedBy(() => result = CpuDecodeAttention.TryAttend(query, newKey, newValue, mask, [(keys, values)], 2, MaskValue)));
        result!.Dispose();
    }

    // A (past, rows, d) cache view: row-major (each row's positions one run, as KvCache homes a float32 CPU cache) or
    // FlexGen's (seq, rows, d) order.
    private static Tensor Cache(int past, int rows, int headDim, bool rowMajor, Generator generator) =>
        rowMajor ? randn(rows, past + 5, headDim, generator: generator).permute(1, 0, 2).narrow(0, 0, past) : randn(past, rows, headDim, generator: generator);

    // In float64 with libtorch: each row's g queries against its cached keys and the new one, masked_fill, softmax, values.
    private static Tensor Reference(Tensor query, Tensor newKey, Tensor newValue, Tensor mask, (Tensor Key, Tensor Value)[] parts, int kvHeads)
    {
        var keys = cat(parts.Select(p => p.Key).ToArray(), 1).to(ScalarType.Float64).permute(1, 0, 2); // (R, t, d)
        var values = cat(parts.Select(p => p.Value).ToArray(), 1).to(ScalarType.Float64).permute(1, 0, 2);
        keys = cat([keys, newKey.to(ScalarType.Float64).permute(1, 0, 2)], 1); // (R, t + 1, d)
        values = cat([values, newValue.to(ScalarType.Float64).permute(1, 0, 2)], 1);
        var scores = bmm(query.to(ScalarType.Float64), keys.transpose(1, 2)); // (R, g, t + 1)
        long rows = query.shape[0];
        var rowMask = mask.repeat_interleave(kvHeads, 0).view(rows, 1, -1); // (R, 1, t + 1)
        var probs = scores.masked_fill(rowMask.logical_not(), MaskValue).softmax(2);
        return bmm(probs, values); // (R, g, d)
    }
}
