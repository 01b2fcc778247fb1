namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// ComputeLayer(i, j, k): the model family's layer math (<see cref="ILayerCompute"/>) on the compute's inputs (hidden-in,
/// weights, loaded cache); the output goes to hidden-out and, for attention, the new cache entries to new-cache. Decode
/// attention with cpu_cache_compute runs in two parts (GPU-cached rows, CPU/disk-cached rows) that write their rows into
/// one output. A joint block's weights are split by the layer's weight groups (attention, then MLP). With grouped
/// compute (<see cref="BlockSchedule.BatchesComputedBy"/>) the k = 0 part runs the layer for every GPU batch at once: the
/// batches' rows concatenated for each weight's matmul, attention per batch over its own cache segments, the results split
/// back into each batch's buffers.
/// </summary>
internal sealed class ComputeLayerHandler(BlockRunContext run) : ITaskHandler
{
    private readonly ComputeInputs _inputs = new(run);
    private readonly CacheAttention _cache = new(run);

    public long Execute(TaskPart part)
    {
        var temporaries = new List<Tensor>();
        try
        {
            return ComputeLayer(part, run.Backend.Layers[part.Task.Layer].Kind, temporaries);
        }
        finally
        {
            foreach (var t in temporaries)
            {
                t.Dispose();
            }
        }
    }

    private long ComputeLayer(TaskPart part, LayerKind kind, List<Tensor> temporaries)
    {
        var key = BatchKey.Of(part.Task);
        var (i, j, k) = (key.Token, key.Layer, key.Batch);
        var (first, count) = run.Plan.Schedule.BatchesComputedBy(part.Task);
        if (count == 0)
        {
            return 0; // grouped compute: the layer's k = 0 part made this batch's results
        }

        // The rows of the layer's products: the prompt's positions at the prefill, but for the output head, which takes
        // each sequence's last; one a sequence at decode (a CPU attention part takes at most its batch's).
        long rows = (long)count * run.BatchRows * (i == 0 && kind != LayerKind.OutputEmbedding ? run.Block.PromptLen : 1);
        var weights = _inputs.Weights(i, j, rows, run.DeviceOf(part.Actor), ComputeOf(part.Actor), temporaries, out long bytes);
        if (kind.HasKvCache() && i > 0 && run.CpuAttention)
        {
            return bytes + ComputeDecodeRows(part, kind, weights, temporaries);
        }

        // The rows of every batch computed here, in batch order: one matmul per weight for all of them.
        var batches = Enumerable.Range(first, count).Select(b => key with { Batch = b }).ToArray();
        var inputs = batches.Select(b => run.Buffers.HiddenIn.Get(b).Data).ToArray(); // each (b, s) ids at j = 0, else (b, s, h)
        var hidden = inputs.Length == 1 ? inputs[0] : torch.cat(inputs, 0); // (count * b, ...)
        var device = run.Gpu.Device;
        var compute = run.GpuCompute;
        var math = run.Backend.LayerCompute;
        Tensor output;
        switch (kind)
        {
            case LayerKind.InputEmbedding:
                output = math.Embed(hidden, _inputs.Mask(i, first, count, device), weights, compute);
                break;
            case LayerKind.Mlp:
                output = math.Mlp(hidden, weights, compute);
                break;
            case LayerKind.OutputEmbedding:
                // Logits for all rows at once; tokens chosen batch by batch, so a sampling generator draws as per batch.
                var logits = math.Logits(hidden, weights, compute); // (count * b, vocab)
                output = torch.cat(batches.Select((_, n) => TokenChoice.Select(
                    logits.narrow(0, n * run.BatchRows, run.BatchRows), run.Block.Generation.Sampling, run.Generator)).ToArray(), 0);
                break;
            case LayerKind.Attention or LayerKind.Block:
            {
                var attention = AttentionWeights(j, weights);
                var mask = _inputs.Mask(i, first, count, device);
                AttentionOutput result;
                if (i == 0)
                {
                    result = math.Prefill(hidden, mask, attention, compute);
                }
                else
                {
                    // Each batch's cache segments cover its own rows; together, in batch order, they cover all rows.
                    var fetched = new ValueRowBytes();
                    var segments = new List<CacheSegment>();
                    foreach (var b in batches)
                    {
                        segments.AddRange(_cache.Segments(b.Task(TaskKind.ComputeLayer), part.Actor, compute, temporaries, fetched, out long cacheBytes));
                        bytes += cacheBytes;
                    }

                    result = math.Decode(hidden, mask, attention, segments, compute, run.Policy.AttnSparsity);
                    bytes += fetched.Bytes;
                }

                output = result.Hidden;
                if (kind == LayerKind.Block)
                {
                    output = math.Mlp(output, run.Backend.Layers[j].Group(weights, LayerSpec.MlpGroup), compute);
                }

                long cacheRows = run.BatchRows * run.KvRowsPerSequence;
                foreach (var (b, n) in batches.Select((b, n) => (b, n)))
                {
                    // (s, b * kv_heads, head_dim) of batch b in its cache's dtype: converted here, by the compute's own
                    // threads, so StoreCache only copies (a conversion on the copy actor's thread competes with the
                    // compute for the cores). A strided view, made contiguous by Adopt.
                    var dtype = run.Cache[j, b.Batch].Key.Dtype;
                    var newEntries = TierTensors.AllOrNone(
                        () => run.Gpu.Adopt(result.NewKey.narrow(1, n * cacheRows, cacheRows).to(dtype)),
                        () => run.Gpu.Adopt(result.NewValue.narrow(1, n * cacheRows, cacheRows).to(dtype)));
                    run.Buffers.NewCache.Add(b, new CacheEntries(newEntries[0], newEntries[1]), part);
                }

                break;
            }

            default:
                throw new InvalidOperationException($"unknown layer kind {kind}");
        }

        foreach (var (b, n) in batches.Select((b, n) => (b, n)))
        {
            // Rows of batch b: a contiguous view sharing the output's storage.
            run.Buffers.HiddenOut.Add(b, run.Gpu.Adopt(output.narrow(0, n * run.BatchRows, run.BatchRows), $"hidden.i{i}.j{j}.k{b.Batch}"), part);
        }

        return bytes;
    }

    /// <summary>
    /// Decode attention (and the MLP of a joint layer) for the rows of batch k whose cache this compute actor
    /// attends over (cpu_cache_compute): GPU-cached rows on gpu-compute, CPU/disk-cached rows on cpu-compute.
    /// Rows are independent, so each part computes its rows completely and writes them into the shared outputs.
    /// </summary>
    private long ComputeDecodeRows(TaskPart part, LayerKind kind, Tensor[] weights, List<Tensor> temporaries)
    {
        var key = BatchKey.Of(part.Task);
        var (i, j, k) = (key.Token, key.Layer, key.Batch);
        var home = run.Cache[j, k];
        var mine = home.Segments.Where(s => run.Router.CacheAttender(s.Home) == part.Actor).ToArray();
        if (mine.Length == 0)
        {
            return 0;
        }

        int kvRows = run.KvRowsPerSequence;
        long rowStart = mine[0].Start, rowEnd = mine[^1].Start + mine[^1].Length; // in batch * kv_heads rows
        int firstRow = (int)(rowStart / kvRows), rowCount = (int)((rowEnd - rowStart) / kvRows);
        var math = run.Backend.LayerCompute;
        var device = run.DeviceOf(part.Actor);
        var compute = ComputeOf(part.Actor);

        var input = run.Buffers.HiddenIn.Get(key).Data; // (b, 1, h)
        var hidden = input.narrow(0, firstRow, rowCount).to(device); // (rows, 1, h)
        var mask = _inputs.Mask(i, k, 1, device).narrow(0, firstRow, rowCount);
        var attention = AttentionWeights(j, weights);
        var fetched = new ValueRowBytes();
        var segments = _cache.Segments(part.Task, part.Actor, compute, temporaries, fetched, out long bytes);
        var result = math.Decode(hidden, mask, attention, segments, compute, run.Policy.AttnSparsity);
        bytes += fetched.Bytes;
        var output = result.Hidden;
        if (kind == LayerKind.Block)
        {
            output = math.Mlp(output, run.Backend.Layers[j].Group(weights, LayerSpec.MlpGroup), compute);
        }

        // One output and one set of new entries for the whole batch, made by whichever part comes first.
        var hiddenOut = run.Buffers.HiddenOut.GetOrAdd(key,
            () => run.Gpu.Allocate([run.BatchRows, 1, input.shape[2]], run.GpuCompute.Dtype, $"hidden.i{i}.j{j}.k{k}"), part);
        var entries = run.Buffers.NewCache.GetOrAdd(key, () =>
        {
            long[] shape = [1, (long)run.BatchRows * kvRows, home.Key.Shape[2]]; // (1, b * kv_heads, head_dim)
            var made = TierTensors.AllOrNone(
                () => run.Gpu.Allocate(shape, home.Key.Dtype, $"newkey.i{i}.j{j}.k{k}"),
                () => run.Gpu.Allocate(shape, home.Key.Dtype, $"newvalue.i{i}.j{j}.k{k}"));
            return new CacheEntries(made[0], made[1]);
        }, part);
        hiddenOut.Data.narrow(0, firstRow, rowCount).copy_(output);
        entries.Key.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewKey);
        entries.Value.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewValue);
        return bytes;
    }

    private ComputeSettings ComputeOf(PipelineActorKind actor) => actor == PipelineActorKind.CpuCompute ? run.CpuCompute : run.GpuCompute;

    /// <summary>The attention weights of layer j: all of an attention layer's, a joint block's first group.</summary>
    private IReadOnlyList<Tensor> AttentionWeights(int j, Tensor[] weights) =>
        run.Backend.Layers[j].Kind == LayerKind.Block ? run.Backend.Layers[j].Group(weights, LayerSpec.AttentionGroup) : weights;
}
