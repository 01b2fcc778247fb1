namespace FlexGen.Actors.Engine.Handlers;

using FlexGen.Actors.Engine.Buffers;
using FlexGen.Actors.Schedule;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using static TorchSharp.torch;

/// <summary>
/// ComputeLayer(i, j, k): the layer math of FlexGen.Tensors.Layers on the compute's inputs (hidden-in, weights, loaded
/// cache); the output goes to hidden-out and, for attention, the new cache entries to new-cache. Decode attention with
/// cpu_cache_compute runs in two parts (GPU-cached rows, CPU/disk-cached rows) that write their rows into one output.
/// The model's own compute lives here alone: <see cref="ComputeLayer"/> and <see cref="ComputeDecodeRows"/>.
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

    private long ComputeLayer(TaskPart part, OptLayerKind kind, List<Tensor> temporaries)
    {
        var key = BatchKey.Of(part.Task);
        var (i, j, k) = (key.Token, key.Layer, key.Batch);
        var weights = _inputs.Weights(i, j, run.DeviceOf(part.Actor), temporaries, out long bytes);
        if (kind.HasCache() && i > 0 && run.CpuAttention)
        {
            return bytes + ComputeDecodeRows(part, kind, weights, temporaries);
        }

        var hidden = run.Buffers.HiddenIn.Get(key).Data; // (b, s) ids at j = 0, else (b, s, h)
        var device = run.Gpu.Device;
        var compute = run.GpuCompute;
        int nHead = run.KvRowsPerSequence;
        Tensor output;
        switch (kind)
        {
            case OptLayerKind.InputEmbed:
                output = InputEmbed.Forward(hidden, _inputs.Mask(i, k, device), InputEmbedWeights.FromOrdered(weights), compute);
                break;
            case OptLayerKind.Mlp:
                output = Mlp.Forward(hidden, MlpWeights.FromOrdered(weights), compute);
                break;
            case OptLayerKind.OutputEmbed:
                output = OutputEmbed.Forward(hidden, OutputEmbedWeights.FromOrdered(weights), compute, run.Block.Sampling, run.Generator);
                break;
            case OptLayerKind.SelfAttention or OptLayerKind.TransformerLayer:
            {
                var attention = SelfAttentionWeights.FromOrdered(weights.Take(SelfAttentionWeights.Count).ToArray());
                var mask = _inputs.Mask(i, k, device);
                AttentionOutput result;
                if (i == 0)
                {
                    result = SelfAttention.Prefill(hidden, mask, attention, nHead, compute);
                }
                else
                {
                    var fetched = new ValueRowBytes();
                    var segments = _cache.Segments(part.Task, part.Actor, compute, temporaries, fetched, out long cacheBytes);
                    result = SelfAttention.DecodeSegmented(hidden, mask, attention, nHead, segments, compute, run.Policy.AttnSparsity);
                    bytes += cacheBytes + fetched.Bytes;
                }

                output = result.Hidden;
                if (kind == OptLayerKind.TransformerLayer)
                {
                    output = Mlp.Forward(output, MlpWeights.FromOrdered(weights.Skip(SelfAttentionWeights.Count).ToArray()), compute);
                }

                var newEntries = TierTensors.AllOrNone(() => run.Gpu.Adopt(result.NewKey), () => run.Gpu.Adopt(result.NewValue));
                run.Buffers.NewCache.Add(key, new CacheEntries(newEntries[0], newEntries[1]), part);
                break;
            }

            default:
                throw new InvalidOperationException($"unknown layer kind {kind}");
        }

        run.Buffers.HiddenOut.Add(key, run.Gpu.Adopt(output, $"hidden.i{i}.j{j}.k{k}"), part);
        return bytes;
    }

    /// <summary>
    /// Decode attention (and the MLP of a joint layer) for the rows of batch k whose cache this compute actor
    /// attends over (cpu_cache_compute): GPU-cached rows on gpu-compute, CPU/disk-cached rows on cpu-compute.
    /// Rows are independent, so each part computes its rows completely and writes them into the shared outputs.
    /// </summary>
    private long ComputeDecodeRows(TaskPart part, OptLayerKind kind, Tensor[] weights, List<Tensor> temporaries)
    {
        var key = BatchKey.Of(part.Task);
        var (i, j, k) = (key.Token, key.Layer, key.Batch);
        var home = run.Cache[j, k];
        var mine = home.Segments.Where(s => run.Router.CacheAttender(s.Home) == part.Actor).ToArray();
        if (mine.Length == 0)
        {
            return 0;
        }

        int nHead = run.KvRowsPerSequence;
        long rowStart = mine[0].Start, rowEnd = mine[^1].Start + mine[^1].Length; // in batch * n_head rows
        int firstRow = (int)(rowStart / nHead), rowCount = (int)((rowEnd - rowStart) / nHead);
        var device = run.DeviceOf(part.Actor);
        var compute = part.Actor == PipelineActorKind.CpuCompute ? run.CpuCompute : run.GpuCompute;

        var input = run.Buffers.HiddenIn.Get(key).Data; // (b, 1, h)
        var hidden = input.narrow(0, firstRow, rowCount).to(device); // (rows, 1, h)
        var mask = _inputs.Mask(i, k, device).narrow(0, firstRow, rowCount);
        var attention = SelfAttentionWeights.FromOrdered(weights.Take(SelfAttentionWeights.Count).ToArray());
        var fetched = new ValueRowBytes();
        var segments = _cache.Segments(part.Task, part.Actor, compute, temporaries, fetched, out long bytes);
        var result = SelfAttention.DecodeSegmented(hidden, mask, attention, nHead, segments, compute, run.Policy.AttnSparsity);
        bytes += fetched.Bytes;
        var output = result.Hidden;
        if (kind == OptLayerKind.TransformerLayer)
        {
            output = Mlp.Forward(output, MlpWeights.FromOrdered(weights.Skip(SelfAttentionWeights.Count).ToArray()), compute);
        }

        // One output and one set of new entries for the whole batch, made by whichever part comes first.
        var hiddenOut = run.Buffers.HiddenOut.GetOrAdd(key,
            () => run.Gpu.Allocate([run.BatchRows, 1, input.shape[2]], run.GpuCompute.Dtype, $"hidden.i{i}.j{j}.k{k}"), part);
        var entries = run.Buffers.NewCache.GetOrAdd(key, () =>
        {
            long[] shape = [1, (long)run.BatchRows * nHead, home.Key.Shape[2]]; // (1, b * n_head, head_dim)
            var made = TierTensors.AllOrNone(
                () => run.Gpu.Allocate(shape, run.GpuCompute.Dtype, $"newkey.i{i}.j{j}.k{k}"),
                () => run.Gpu.Allocate(shape, run.GpuCompute.Dtype, $"newvalue.i{i}.j{j}.k{k}"));
            return new CacheEntries(made[0], made[1]);
        }, part);
        hiddenOut.Data.narrow(0, firstRow, rowCount).copy_(output);
        entries.Key.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewKey);
        entries.Value.Data.narrow(1, rowStart, rowEnd - rowStart).copy_(result.NewValue);
        return bytes;
    }
}
