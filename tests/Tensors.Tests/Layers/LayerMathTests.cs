namespace FlexGen.Tensors.Tests.Layers;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Diagnostics;
using FlexGen.Tensors.Layers;
using TorchSharp;
using static TorchSharp.torch;

public sealed class LayerMathTests : IDisposable
{
    private readonly OptWeightsHolder _model = new();

    private static ComputeSettings F32 => ComputeSettings.Float32;

    public void Dispose() => _model.Dispose();

    [Fact]
    public void Positions_should_map_pads_to_one_and_real_tokens_to_two_onwards()
    {
        using var mask = torch.tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1 }, [2, 4]);
        using var positions = InputEmbed.Positions(mask);
        Assert.Equal(new long[] { 1, 1, 2, 3, 2, 3, 4, 5 }, positions.data<long>().ToArray());
    }

    [Fact]
    public void InputEmbed_should_add_token_and_position_rows_and_slice_positions_to_the_new_token()
    {
        var w = _model.Weights.InputEmbed;
        using var scope = NewDisposeScope();
        var ids = torch.tensor(new long[] { 1, 5, 6, 1, 1, 9 }, [2, 3]);
        var mask = torch.tensor(new[] { false, true, true, false, false, true }, [2, 3]);
        var hidden = InputEmbed.Forward(ids, mask, w, F32);
        Assert.Equal(new long[] { 2, 3, SmallOpt.Config.InputDim }, hidden.shape);
        Assert.Equal(ScalarType.Float32, hidden.dtype);
        // Row 0, token 6 at position index 3 (second real token); row 1, pad at position row 1.
        var expected0 = w.TokenEmbedding[6].to(ScalarType.Float32) + w.PositionEmbedding[3].to(ScalarType.Float32);
        var expected1 = w.TokenEmbedding[1].to(ScalarType.Float32) + w.PositionEmbedding[1].to(ScalarType.Float32);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(hidden[0, 2], expected0));
        Assert.Equal(0, SmallOpt.MaxAbsDiff(hidden[1, 0], expected1));

        // Decode: one new token, the mask covers 4 positions; row 0 is at its third real token -> position row 4.
        var next = torch.tensor(new long[] { 8, 8 }, [2, 1]);
        var longer = torch.cat([mask, torch.ones([2, 1], ScalarType.Bool)], 1);
        var decoded = InputEmbed.Forward(next, longer, w, F32);
        Assert.Equal(new long[] { 2, 1, SmallOpt.Config.InputDim }, decoded.shape);
        var expectedDecode0 = w.TokenEmbedding[8].to(ScalarType.Float32) + w.PositionEmbedding[4].to(ScalarType.Float32);
        var expectedDecode1 = w.TokenEmbedding[8].to(ScalarType.Float32) + w.PositionEmbedding[3].to(ScalarType.Float32);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(decoded[0, 0], expectedDecode0));
        Assert.Equal(0, SmallOpt.MaxAbsDiff(decoded[1, 0], expectedDecode1));
    }

    [Fact]
    public void Decode_should_equal_prefill_of_the_sequence_one_token_longer()
    {
        using var scope = NewDisposeScope();
        var (hidden, mask) = Inputs(seq: 7, pads: [0, 3, 1]);
        var w = _model.Weights.Attention[0];
        int nHead = SmallOpt.Config.NHead;
        var full = SelfAttention.Prefill(hidden, mask, w, nHead, F32);
        var past = SelfAttention.Prefill(hidden.narrow(1, 0, 6), mask.narrow(1, 0, 6), w, nHead, F32);
        var step = SelfAttention.Decode(hidden.narrow(1, 6, 1), mask, w, nHead, past.NewKey, past.NewValue, F32);

        Assert.Equal(new long[] { 3, 1, SmallOpt.Config.InputDim }, step.Hidden.shape);
        Assert.Equal(new long[] { 1, 3 * nHead, SmallOpt.Config.InputDim / nHead }, step.NewKey.shape);
        Assert.True(SmallOpt.MaxAbsDiff(step.Hidden, full.Hidden.narrow(1, 6, 1)) < 1e-5);
        Assert.True(SmallOpt.MaxAbsDiff(step.NewKey, full.NewKey.narrow(0, 6, 1)) < 1e-5);
        Assert.True(SmallOpt.MaxAbsDiff(step.NewValue, full.NewValue.narrow(0, 6, 1)) < 1e-5);
        // And the prefill cache entries of the shorter prompt are the longer prompt's first six.
        Assert.True(SmallOpt.MaxAbsDiff(past.NewKey, full.NewKey.narrow(0, 0, 6)) < 1e-5);
    }

    [Fact]
    public void Decode_should_read_only_the_first_past_positions_of_a_longer_cache()
    {
        using var scope = NewDisposeScope();
        var (hidden, mask) = Inputs(seq: 5, pads: [1, 0]);
        var w = _model.Weights.Attention[1];
        int nHead = SmallOpt.Config.NHead;
        var past = SelfAttention.Prefill(hidden.narrow(1, 0, 4), mask.narrow(1, 0, 4), w, nHead, F32);
        // A preallocated cache (positions beyond the past filled with garbage) in float16, as the tiers store it.
        var big = torch.full([9, past.NewKey.shape[1], past.NewKey.shape[2]], 1000.0, ScalarType.Float16);
        var bigValues = big.clone();
        big.narrow(0, 0, 4).copy_(past.NewKey);
        bigValues.narrow(0, 0, 4).copy_(past.NewValue);
        var exact = SelfAttention.Decode(hidden.narrow(1, 4, 1), mask, w, nHead, past.NewKey, past.NewValue, F32);
        var fromBig = SelfAttention.Decode(hidden.narrow(1, 4, 1), mask, w, nHead, big, bigValues, F32);
        Assert.True(SmallOpt.MaxAbsDiff(exact.Hidden, fromBig.Hidden) < 1e-2); // float16 rounding of the cache only
    }

    [Fact]
    public void Sparse_kernel_with_every_past_position_kept_should_equal_dense()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3, CPU);
        var probs = torch.rand([8, 1, 10], generator: generator).softmax(2);
        var values = torch.randn([8, 10, 16], generator: generator);
        var dense = torch.bmm(probs, values);
        var sparse = SegmentAttention.SparsePastValue(probs, values, 10);
        Assert.True(SmallOpt.MaxAbsDiff(dense, sparse) < 1e-6);
    }

    [Fact]
    public void Sparse_kernel_should_sum_only_the_top_k_weights_without_renormalising()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(4, CPU);
        var probs = torch.rand([8, 1, 10], generator: generator).softmax(2);
        var values = torch.randn([8, 10, 16], generator: generator);
        // Keep the 4 largest weights of each row, zero the rest: the dense product of that is the expected value.
        var kth = probs.sort(2, descending: true).Values.narrow(2, 3, 1); // (8, 1, 1)
        var kept = probs.masked_fill(probs.lt(kth), 0.0);
        var expected = torch.bmm(kept, values);
        var sparse = SegmentAttention.SparsePastValue(probs, values, 4);
        Assert.True(SmallOpt.MaxAbsDiff(expected, sparse) < 1e-6);
        Assert.True(SmallOpt.MaxAbsDiff(torch.bmm(probs, values), sparse) > 1e-3);
    }

    [Fact]
    public void Decode_with_sparsity_one_should_equal_dense_and_lower_sparsity_should_differ()
    {
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 9, pads: [0, 2, 4, 1]);
        var w = _model.Weights.Attention[0];
        int nHead = SmallOpt.Config.NHead;
        var dense = SelfAttention.Decode(hidden, mask, w, nHead, past.NewKey, past.NewValue, F32);
        var one = SelfAttention.Decode(hidden, mask, w, nHead, past.NewKey, past.NewValue, F32, attnSparsity: 1.0);
        var half = SelfAttention.Decode(hidden, mask, w, nHead, past.NewKey, past.NewValue, F32, attnSparsity: 0.5);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(dense.Hidden, one.Hidden));
        Assert.True(SmallOpt.MaxAbsDiff(dense.Hidden, half.Hidden) > 1e-4);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(dense.NewKey, half.NewKey)); // the new entries do not depend on sparsity
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.5)]
    public void Segmented_decode_should_equal_the_unsplit_one(double sparsity)
    {
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 8, pads: [0, 2, 4, 1]);
        var w = _model.Weights.Attention[1];
        int nHead = SmallOpt.Config.NHead;
        var whole = SelfAttention.Decode(hidden, mask, w, nHead, past.NewKey, past.NewValue, F32, sparsity);

        // GPU part: sequence 0; CPU part: sequences 1-2; a third segment: sequence 3.
        long[] bounds = [0, nHead, 3 * nHead, 4 * nHead];
        var segments = Split(past, bounds, [F32, F32, F32]);
        var split = SelfAttention.DecodeSegmented(hidden, mask, w, nHead, segments, F32, sparsity);
        Assert.True(SmallOpt.MaxAbsDiff(whole.Hidden, split.Hidden) < 1e-6);

        // An empty segment (a tier that got 0% of the cache) contributes nothing.
        var empty = new CacheSegment(past.NewKey.narrow(1, 0, 0), past.NewValue.narrow(1, 0, 0), F32);
        var withEmpty = SelfAttention.DecodeSegmented(hidden, mask, w, nHead, [empty, .. segments], F32, sparsity);
        Assert.True(SmallOpt.MaxAbsDiff(whole.Hidden, withEmpty.Hidden) < 1e-6);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(whole.NewKey, split.NewKey));

        // The same in three calls, as an actor pipeline runs it: projections, each segment where it lives, finish.
        var projection = SelfAttention.ProjectDecode(hidden, w, nHead, F32);
        var values = segments.Select((s, i) =>
            SegmentAttention.AttendSegment(projection, mask, s.Key, s.Value!, bounds[i], nHead, s.Compute, sparsity)).ToArray();
        var finished = SelfAttention.FinishDecode(values, hidden, w, F32);
        Assert.True(SmallOpt.MaxAbsDiff(whole.Hidden, finished) < 1e-6);
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.5)]
    public void AttendAll_should_attend_segments_on_one_device_together_with_the_numbers_of_one_at_a_time(double sparsity)
    {
        // A grouped compute's batches each attend their own cache; consecutive segments on one device in one attention
        // dtype share one score tensor, mask and softmax. A bfloat16 segment on the CPU attends in float32 too, so it
        // joins the run; a segment with another mask fill starts a run of its own.
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 8, pads: [0, 2, 4, 1]);
        var w = _model.Weights.Attention[1];
        int nHead = SmallOpt.Config.NHead;
        var projection = SelfAttention.ProjectDecode(hidden, w, nHead, F32);
        long[] bounds = [0, nHead, 3 * nHead, 4 * nHead];
        var segments = Split(past, bounds,
            [F32, new ComputeSettings(ScalarType.BFloat16), new ComputeSettings(ScalarType.Float32, MaskFill.DtypeMin)]);

        var together = SegmentAttention.AttendAll(projection, mask, segments, nHead, sparsity);
        var apart = segments.Select((s, i) =>
            SegmentAttention.AttendSegment(projection, mask, s.Key, s.Value!, bounds[i], nHead, s.Compute, sparsity)).ToArray();

        Assert.Equal(2, together.Count); // the first two segments as one run, the third alone
        Assert.Equal([3L * nHead, 1, projection.Query.shape[2]], together[0].shape);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(together[0], torch.cat([apart[0], apart[1]], 0)));
        Assert.Equal(0, SmallOpt.MaxAbsDiff(together[1], apart[2]));
    }

    // The cache split along its rows at bounds into contiguous segments, segment i computed with computes[i].
    private static CacheSegment[] Split(AttentionOutput past, long[] bounds, ComputeSettings[] computes) =>
        Enumerable.Range(0, computes.Length).Select(i => new CacheSegment(
            past.NewKey.narrow(1, bounds[i], bounds[i + 1] - bounds[i]).contiguous(),
            past.NewValue.narrow(1, bounds[i], bounds[i + 1] - bounds[i]).contiguous(), computes[i])).ToArray();

    [Fact]
    public void Sparse_decode_with_fetched_value_rows_should_equal_reading_the_whole_value_cache()
    {
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 11, pads: [0, 3]);
        var w = _model.Weights.Attention[0];
        int nHead = SmallOpt.Config.NHead;
        var values = past.NewValue.to(ScalarType.Float16); // (t = 10, rows, d), as a cache stores it
        long rows = values.shape[1], headDim = values.shape[2];
        var asked = new List<long[]>();
        Tensor Fetch(Tensor positions)
        {
            asked.Add(positions.shape);
            var rowIndex = torch.arange(rows, ScalarType.Int64).view(1, rows).expand(positions.shape[0], rows);
            return values.index([TensorIndex.Tensor(positions.to(CPU)), TensorIndex.Tensor(rowIndex)]);
        }

        var whole = SelfAttention.DecodeSegmented(hidden, mask, w, nHead, [new CacheSegment(past.NewKey, values, F32)], F32, 0.5);
        var fetched = SelfAttention.DecodeSegmented(hidden, mask, w, nHead, [new CacheSegment(past.NewKey, Fetch, F32)], F32, 0.5);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(whole.Hidden, fetched.Hidden));
        Assert.Equal([5L, rows], Assert.Single(asked)); // top-k = int(0.5 * 10) positions per row, nothing else
        Assert.Throws<ArgumentException>(() =>
            SegmentAttention.AttendSegment(SelfAttention.ProjectDecode(hidden, w, nHead, F32), mask, past.NewKey, Fetch, 0, nHead, F32, 1.0));
        Assert.Equal(headDim, fetched.NewValue.shape[2]);
    }

    [Fact]
    public void Segment_in_bfloat16_should_attend_in_float32_on_the_cpu()
    {
        // Decode attention over a CPU segment runs in float32 whatever the segment's compute dtype
        // (SegmentAttention.AttentionCompute): a bfloat16 segment gives the float32 numbers exactly.
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 8, pads: [0, 2]);
        var w = _model.Weights.Attention[0];
        int nHead = SmallOpt.Config.NHead;
        var whole = SelfAttention.Decode(hidden, mask, w, nHead, past.NewKey, past.NewValue, F32);
        CacheSegment[] segments =
        [
            new(past.NewKey.narrow(1, 0, nHead), past.NewValue.narrow(1, 0, nHead), F32),
            new(past.NewKey.narrow(1, nHead, nHead), past.NewValue.narrow(1, nHead, nHead), ComputeSettings.BFloat16),
        ];
        var split = SelfAttention.DecodeSegmented(hidden, mask, w, nHead, segments, F32);
        Assert.Equal(ScalarType.Float32, split.Hidden.dtype);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(whole.Hidden, split.Hidden));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void VocabLogits_should_equal_the_linear_product(ScalarType dtype)
    {
        // float32 on the CPU multiplies with the table as the left operand (a transposed view comes back).
        using var scope = NewDisposeScope();
        var compute = new ComputeSettings(dtype);
        var x = randn(5, 16, generator: new Generator(3)).to(dtype); // (rows, h)
        var table = randn(40, 16, generator: new Generator(4)).to(ScalarType.Float16); // (vocab, h), stored float16
        var logits = LayerMath.VocabLogits(x, table, compute);
        var expected = nn.functional.linear(x.to(ScalarType.Float32), table.to(ScalarType.Float32));
        Assert.Equal(dtype, logits.dtype);
        Assert.Equal([5L, 40L], logits.shape);
        Assert.InRange(SmallOpt.MaxAbsDiff(expected, logits.to(ScalarType.Float32)), 0, dtype == ScalarType.Float32 ? 1e-5 : 0.1);
    }

    [Theory]
    [InlineData(ScalarType.Float32, true, 3)]
    [InlineData(ScalarType.Float32, false, 3)]
    [InlineData(ScalarType.Float32, true, 1)]
    [InlineData(ScalarType.BFloat16, true, 3)]
    [InlineData(ScalarType.BFloat16, true, 7)]
    [InlineData(ScalarType.BFloat16, false, 7)]
    public void Linear_should_equal_the_plain_product_in_the_input_shape(ScalarType dtype, bool withBias, int batch)
    {
        // On the CPU float32 with 9 to 256 rows (15 here, 5 at batch 1) and bfloat16 with 32 to 128 (35 at batch 7, not 15;
        // libtorch's, not MKL's) multiply with the weight as the left operand and return a transposed view.
        using var scope = NewDisposeScope();
        var compute = new ComputeSettings(dtype);
        var x = randn(batch, 5, 16, generator: new Generator(5)).to(dtype); // (b, s, in)
        var weight = randn(24, 16, generator: new Generator(6)).to(ScalarType.Float16); // (out, in), stored float16
        var bias = withBias ? randn(24, generator: new Generator(7)).to(ScalarType.Float16) : null;
        var y = LayerMath.Linear(x, weight, bias, compute);
        var expected = nn.functional.linear(x.to(ScalarType.Float32), weight.to(ScalarType.Float32),
            bias?.to(ScalarType.Float32));
        Assert.Equal(dtype, y.dtype);
        Assert.Equal([batch, 5L, 24L], y.shape);
        // bfloat16 through MKL (a CPU without bfloat16 instructions) is a plain, contiguous product.
        Assert.Equal(dtype == ScalarType.Float32 ? batch > 1 : batch == 7 && !MklBFloat16Gemm.Used, LayerMath.PutsWeightOnLeft(x, compute));
        Assert.Equal(LayerMath.PutsWeightOnLeft(x, compute), !y.is_contiguous());
        Assert.InRange(SmallOpt.MaxAbsDiff(expected, y.to(ScalarType.Float32)), 0, dtype == ScalarType.Float32 ? 1e-5 : 0.1);

        // A transposed result feeds the next projection without a copy and reshapes like any tensor.
        var next = LayerMath.Linear(y, randn(8, 24, generator: new Generator(8)), null, compute);
        Assert.Equal([batch, 5L, 8L], next.shape);
        Assert.Equal([batch * 5L, 24L], y.reshape(batch * 5, 24).shape);
    }

    [Fact]
    public void Weight_should_go_left_only_on_the_cpu_at_the_row_counts_where_its_dtype_gains()
    {
        using var scope = NewDisposeScope();
        var f32 = new ComputeSettings(ScalarType.Float32);
        Assert.False(LayerMath.PutsWeightOnLeft(zeros(2, 4, 3), f32)); // 8 rows
        Assert.True(LayerMath.PutsWeightOnLeft(zeros(3, 3, 3), f32)); // 9
        Assert.True(LayerMath.PutsWeightOnLeft(zeros(256, 3), f32));
        Assert.False(LayerMath.PutsWeightOnLeft(zeros(1, 257, 3), f32)); // prefill's rows

        var bf16 = new ComputeSettings(ScalarType.BFloat16);
        Tensor Rows(long rows) => zeros(rows, 1, 3).to(ScalarType.BFloat16);
        // libtorch's bfloat16 at 32 to 128 rows; through MKL (a CPU without bfloat16 instructions) never.
        bool left = !MklBFloat16Gemm.Used;
        Assert.False(LayerMath.PutsWeightOnLeft(Rows(31), bf16));
        Assert.Equal(left, LayerMath.PutsWeightOnLeft(Rows(32), bf16));
        Assert.Equal(left, LayerMath.PutsWeightOnLeft(Rows(128), bf16));
        Assert.False(LayerMath.PutsWeightOnLeft(Rows(129), bf16));
    }

    [Fact]
    public void AddResidual_should_give_a_contiguous_sum_for_a_transposed_projection()
    {
        using var scope = NewDisposeScope();
        var residual = randn(4, 1, 12, generator: new Generator(9)); // (b, 1, h)
        var transposed = randn(12, 4, generator: new Generator(10)).t().view(4, 1, 12); // a float32 CPU Linear's layout
        Assert.False(transposed.is_contiguous());
        var expected = transposed.add(residual);
        var sum = LayerMath.AddResidual(transposed, residual);
        Assert.True(sum.is_contiguous());
        Assert.Equal(0, SmallOpt.MaxAbsDiff(expected, sum));

        // A contiguous projection (every other dtype and device) takes the sum in place.
        var contiguous = randn(4, 1, 12, generator: new Generator(11));
        var expectedInPlace = contiguous.add(residual);
        LayerMath.AddResidual(contiguous, residual);
        Assert.Equal(0, SmallOpt.MaxAbsDiff(expectedInPlace, contiguous));
    }

    [Fact]
    public void AttentionCompute_should_be_float32_on_the_cpu_keeping_the_mask_fill()
    {
        var bf16 = new ComputeSettings(ScalarType.BFloat16, MaskFill.DtypeMin);
        var onCpu = SegmentAttention.AttentionCompute(bf16, CPU);
        Assert.Equal(ScalarType.Float32, onCpu.Dtype);
        Assert.Equal(MaskFill.DtypeMin, onCpu.MaskFill);
        Assert.Same(F32, SegmentAttention.AttentionCompute(F32, CPU));
    }

    [Fact]
    public void Segments_should_be_refused_unless_whole_sequences_covering_every_row()
    {
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 6, pads: [0, 1]);
        var w = _model.Weights.Attention[0];
        int nHead = SmallOpt.Config.NHead;
        CacheSegment[] ragged =
        [
            new(past.NewKey.narrow(1, 0, 3), past.NewValue.narrow(1, 0, 3), F32),
            new(past.NewKey.narrow(1, 3, 5), past.NewValue.narrow(1, 3, 5), F32),
        ];
        var e1 = Assert.Throws<ArgumentException>(() => SelfAttention.DecodeSegmented(hidden, mask, w, nHead, ragged, F32));
        Assert.Contains("multiples of n_head", e1.Message);
        CacheSegment[] partial = [new(past.NewKey.narrow(1, 0, nHead), past.NewValue.narrow(1, 0, nHead), F32)];
        var e2 = Assert.Throws<ArgumentException>(() => SelfAttention.DecodeSegmented(hidden, mask, w, nHead, partial, F32));
        Assert.Contains("cover 4 of the batch * n_head = 8 rows", e2.Message);

        // The split is checked before any segment is attended: the first segment's values are never fetched.
        var fetches = 0;
        Tensor Fetch(Tensor positions)
        {
            fetches++;
            throw new InvalidOperationException("attended a segment of a refused split");
        }

        CacheSegment[] partialFetched = [new(past.NewKey.narrow(1, 0, nHead), Fetch, F32)];
        var e3 = Assert.Throws<ArgumentException>(() => SelfAttention.DecodeSegmented(hidden, mask, w, nHead, partialFetched, F32, 0.5));
        Assert.Contains("cover 4 of the batch * n_head = 8 rows", e3.Message);
        Assert.Equal(0, fetches);
    }

    [Fact]
    public void Decode_should_refuse_a_cache_shorter_than_the_mask_says()
    {
        using var scope = NewDisposeScope();
        var (past, hidden, mask) = PastAndNext(seq: 6, pads: [0, 1]);
        var longerMask = torch.cat([mask, torch.ones([2, 1], ScalarType.Bool)], 1);
        var e = Assert.Throws<ArgumentException>(() => SelfAttention.Decode(
            hidden, longerMask, _model.Weights.Attention[0], SmallOpt.Config.NHead, past.NewKey, past.NewValue, F32));
        Assert.Contains("keyCache holds 5 positions but the attention mask needs 6", e.Message);
    }

    [Fact]
    public void Float16_compute_should_be_refused_on_the_cpu_by_every_layer()
    {
        using var scope = NewDisposeScope();
        var f16 = ComputeSettings.Float16;
        var weights = _model.Weights;
        var (hidden, mask) = Inputs(seq: 3, pads: [0]);
        var ids = torch.ones([1, 3], ScalarType.Int64);
        Action[] calls =
        [
            () => InputEmbed.Forward(ids, mask, weights.InputEmbed, f16),
            () => SelfAttention.Prefill(hidden, mask, weights.Attention[0], 4, f16),
            () => SelfAttention.ProjectDecode(hidden.narrow(1, 0, 1), weights.Attention[0], 4, f16),
            () => Mlp.Forward(hidden, weights.Mlp[0], f16),
            () => OutputEmbed.Logits(hidden, weights.OutputEmbed, f16),
        ];
        foreach (var call in calls)
        {
            var e = Assert.Throws<UnsupportedComputeException>(call);
            Assert.Contains("Float16 is refused on the CPU", e.Message);
        }
    }

    [Fact]
    public void Compute_settings_should_refuse_non_float_dtypes()
    {
        var e = Assert.Throws<ArgumentException>(() => new ComputeSettings(ScalarType.Int32));
        Assert.Contains("Int32", e.Message);
    }

    [Fact]
    public void Bfloat16_compute_should_return_bfloat16_close_to_float32()
    {
        using var scope = NewDisposeScope();
        var (hidden, _) = Inputs(seq: 4, pads: [0, 1]);
        var f32 = Mlp.Forward(hidden, _model.Weights.Mlp[0], F32);
        var bf16 = Mlp.Forward(hidden, _model.Weights.Mlp[0], ComputeSettings.BFloat16);
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.InRange(SmallOpt.MaxAbsDiff(f32, bf16), 1e-6, 0.1);
    }

    [Fact]
    public void Mask_fill_dtype_min_should_give_the_same_attention_as_flexgen_fill_on_real_tokens()
    {
        using var scope = NewDisposeScope();
        var (hidden, mask) = Inputs(seq: 6, pads: [0, 2]);
        var w = _model.Weights.Attention[0];
        var flexgen = SelfAttention.Prefill(hidden, mask, w, 4, F32);
        var min = SelfAttention.Prefill(hidden, mask, w, 4, new ComputeSettings(ScalarType.Float32, MaskFill.DtypeMin));
        // Row 1's first two positions are pads; every other position is real and must agree.
        Assert.True(SmallOpt.MaxAbsDiff(flexgen.Hidden[0], min.Hidden[0]) < 1e-6);
        Assert.True(SmallOpt.MaxAbsDiff(flexgen.Hidden[1].narrow(0, 2, 4), min.Hidden[1].narrow(0, 2, 4)) < 1e-6);
    }

    [Fact]
    public void Layer_functions_should_leave_no_tensor_behind()
    {
        using var scope = NewDisposeScope();
        var (hidden, mask) = Inputs(seq: 5, pads: [0, 2]);
        var (pastHidden, pastMask, nextHidden) = (hidden.narrow(1, 0, 4), mask.narrow(1, 0, 4), hidden.narrow(1, 4, 1));
        var w = _model.Weights;
        int nHead = SmallOpt.Config.NHead;
        long leaked = LiveTensors.LeakedBy(() =>
        {
            using var past = SelfAttention.Prefill(pastHidden, pastMask, w.Attention[0], nHead, F32);
            using var step = SelfAttention.Decode(nextHidden, mask, w.Attention[0], nHead, past.NewKey, past.NewValue, F32, 0.5);
            using var mlp = Mlp.Forward(step.Hidden, w.Mlp[0], F32);
            using var logits = OutputEmbed.Logits(mlp, w.OutputEmbed, F32);
            using var ids = TokenChoice.Select(logits, SamplingOptions.Greedy);
            using var positions = InputEmbed.Positions(mask);
            using var embedded = InputEmbed.Forward(ids, mask, w.InputEmbed, ComputeSettings.BFloat16);
        });
        Assert.Equal(0, leaked);
    }

    [Fact]
    public void Weight_records_should_round_trip_flexgen_order_and_refuse_wrong_counts()
    {
        var w = _model.Weights;
        var again = SelfAttentionWeights.FromOrdered(w.Attention[1].Ordered);
        Assert.Equal(w.Attention[1], again);
        Assert.Same(w["decoder.layers.1.self_attn.k_proj.bias"], w.Attention[1].KBias);
        Assert.Same(w.InputEmbed.TokenEmbedding, w.OutputEmbed.TokenEmbedding);
        var e = Assert.Throws<ArgumentException>(() => MlpWeights.FromOrdered(w.Mlp[0].Ordered.Take(5).ToArray()));
        Assert.Contains("MlpWeights takes 6 tensors", e.Message);
    }

    /// <summary>Hidden states (n, seq, h) from the input embedding of random prompts, and their mask.</summary>
    private (Tensor Hidden, Tensor Mask) Inputs(int seq, int[] pads)
    {
        using var scope = NewDisposeScope();
        var (ids, mask) = SmallOpt.Prompts(seq, pads);
        var hidden = InputEmbed.Forward(ids, mask, _model.Weights.InputEmbed, F32);
        scope.MoveToOuter(hidden, mask);
        return (hidden, mask);
    }

    /// <summary>The prefill of the first seq - 1 positions, and the last position's hidden state and full mask.</summary>
    private (AttentionOutput Past, Tensor Hidden, Tensor Mask) PastAndNext(int seq, int[] pads)
    {
        var (hidden, mask) = Inputs(seq, pads);
        var past = SelfAttention.Prefill(hidden.narrow(1, 0, seq - 1), mask.narrow(1, 0, seq - 1),
            _model.Weights.Attention[0], SmallOpt.Config.NHead, F32);
        return (past, hidden.narrow(1, seq - 1, 1), mask);
    }

    private sealed class OptWeightsHolder : IDisposable
    {
        public OptWeights Weights { get; } = SmallOpt.Weights();

        public void Dispose() => Weights.Dispose();
    }

    [Fact]
    public void ToCompute_of_a_tensor_already_in_the_compute_dtype_on_its_device_should_not_copy()
    {
        using var weight = torch.randn([64, 32], dtype: ScalarType.Float32);
        using var same = LayerMath.ToCompute(weight, F32, CPU);
        same.fill_(3.0f); // the same storage: no conversion, no copy
        Assert.Equal(3.0f, weight[63, 31].item<float>());

        using var half = weight.to(ScalarType.Float16);
        using var converted = LayerMath.ToCompute(half, F32, CPU);
        converted.fill_(5.0f);
        Assert.NotEqual(5.0f, half[0, 0].to(ScalarType.Float32).item<float>());
        Assert.Equal(ScalarType.Float32, converted.dtype);
    }
}
