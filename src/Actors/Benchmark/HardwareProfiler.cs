namespace FlexGen.Actors.Benchmark;

using System.Collections.Immutable;
using System.Diagnostics;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Engine;
using FlexGen.Tensors;
using FlexGen.Tensors.Compression;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>What <see cref="HardwareProfiler.Measure"/> measures with.</summary>
/// <param name="OffloadDirectory">A folder on the disk the disk tier would use (a scratch file is made and deleted there).</param>
/// <param name="TransferBytes">Bytes of each link transfer (rounded down to 4 KiB).</param>
/// <param name="ComputeDtype">The GPU tier's compute dtype (float16 with CUDA; float32 or bfloat16 on the CPU).</param>
/// <param name="DirectIo">Disk transfers with O_DIRECT (as the disk tier runs them by default in bench).</param>
/// <param name="SecondsPerMeasure">How long each constant is measured for (at least one repetition).</param>
/// <param name="CurveWorkingSetBytes">The MLP-layer curve (mm_flops_rows) steps through copies of the layer's weights
/// holding about this many bytes, one copy per step, so each step reads its weights from memory as a model's layer
/// does (a model's weights do not stay in the caches between its steps; one 32 MiB layer measured again and again
/// did, and its rate moved 2x from day to day with what else shared the cache). At most one copy below a layer's bytes.</param>
/// <param name="DiskSpanTransfers">The disk's read and write rates (dtoc_bdw, ctod_bdw_cache_p) are sustained rates over
/// this many distinct transfers, written in turn and then read in turn for the time given, as a model's weights are
/// written once and streamed every token: the bytes over the whole time, not the best repetition. On a VM one transfer
/// read again and again came from the host's cache at 2-4x what runs read. Fewer when the folder's free space is short.</param>
public sealed record HardwareProfileOptions(
    string OffloadDirectory, long TransferBytes = 256L << 20, ScalarType ComputeDtype = ScalarType.Float32, bool DirectIo = true,
    double SecondsPerMeasure = 1.5, long CurveWorkingSetBytes = 512L << 20, int DiskSpanTransfers = HardwareProfileOptions.DefaultDiskSpanTransfers)
{
    /// <summary>Transfers in the disk's span unless told (2 GiB at the default 256 MiB each).</summary>
    public const int DefaultDiskSpanTransfers = 8;
}

/// <summary>One measured constant, as reported while the profile runs.</summary>
/// <param name="Name">FlexLLMGen's name (ctog_bdw, mm_flops_p, ...).</param>
/// <param name="Value">bytes/s, FLOP/s or (task_s) seconds.</param>
/// <param name="What">What was measured, in words.</param>
public sealed record ProfileStep(string Name, double Value, string What);

/// <summary>
/// Measures this machine's constants of FlexLLMGen's cost model (<see cref="HardwareProfile"/>) through this engine's own
/// tiers and libtorch: each link by <see cref="TierCopy"/> between the tiers (without CUDA the GPU tier is CPU memory,
/// so CPU - GPU is a memory copy; CPU -> GPU converts float16 into the compute dtype as a streamed weight is), disk with
/// the disk tier, matmul and batched matmul rates in the compute dtype on the GPU tier's device at prefill and decode
/// shapes, the CPU attention rate as float32 bmm on the CPU. Beyond FlexLLMGen's names, for the engine's terms: the 4-bit
/// dequantization rate (comp_bdw), the pipeline's own time per layer task (task_s), the family's MLP layer rate by
/// rows (mm_flops_rows) and the share of that rate it keeps while the disk tier reads beside it (mm_share_dtoc). The
/// best of the repetitions within <see cref="HardwareProfileOptions.SecondsPerMeasure"/> counts. c1, c2, c3 are
/// FlexLLMGen's defaults.
/// </summary>
public static class HardwareProfiler
{
    // Shapes (a 1.3B-model-like width, kept small enough for a CPU): prefill 1024 rows, decode 32 rows of a 2048 x 8192 weight;
    // attention over 32 sequences x 16 heads of head_dim 128, prompt 512 (prefill) and a 1024-position cache (decode).
    private const long Hidden = 2048, Ffn = 8192, PrefillRows = 1024, DecodeRows = 32;
    private const long HeadRows = 32 * 16, HeadDim = 128, PrefillSeq = 512, DecodeSeq = 1024;

    // The matmul curve: an MLP of hidden 1024 (between a 125M and a 1.3B model's) at 1 ... 2048 activation rows.
    private const long CurveHidden = 1024;
    private static readonly int[] CurveRows = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];
    private const long CompressedRows = 4096;
    private const long TaskModelHidden = 64;

    // The compute beside the disk's reads: the MLP layer at a decode block's rows.
    private const int ShareRows = 64;

    /// <summary>How many measurements a profile reports (the progress line's count).</summary>
    public static int StepCount => 15 + CurveRows.Length;

    public static HardwareProfile Measure(HardwareProfileOptions options, IProgress<ProfileStep>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        Directory.CreateDirectory(options.OffloadDirectory);
        long bytes = Math.Max(4096L, options.TransferBytes & ~4095L); // whole O_DIRECT blocks
        string scratch = Path.Combine(options.OffloadDirectory, $"flexgen-profile-{Environment.ProcessId}-{Guid.NewGuid():N}");
        var values = new Dictionary<string, double>();
        var curve = new List<(int Rows, double Flops)>();
        void Report(string name, double value, string what)
        {
            values[name] = value;
            progress?.Report(new ProfileStep(name, value, what));
        }

        try
        {
            OffloadFolders.CreatePrivate(scratch);
            using var tiers = new MemoryTiers(new TierSettings
            {
                OffloadDirectory = scratch,
                PinCpuMemory = true,
                Disk = new DiskTierSettings(DirectIo: options.DirectIo),
            });
            using var scope = NewDisposeScope();
            long elements = bytes / 2;
            using var cpu = tiers.Cpu.Allocate([elements], ScalarType.Float16, "profile-cpu");
            // A float16 weight as the CPU tier keeps it for this compute dtype (ModelWeights.OffComputeHomeDtype).
            var weightDtype = ModelWeights.OffComputeHomeDtype(options.ComputeDtype, ScalarType.Float16);
            using var weight = weightDtype == ScalarType.Float16 ? null : tiers.Cpu.Allocate([elements], weightDtype, "profile-weight");
            using var gpu = tiers.Gpu.Allocate([elements], ScalarType.Float16, "profile-gpu");
            // The span of distinct transfers the disk rates run over, at most half the folder's free space.
            long free = new DriveInfo(Path.GetFullPath(scratch)).AvailableFreeSpace;
            int spanTransfers = (int)Math.Clamp(free / 2 / bytes, 1, Math.Max(1, options.DiskSpanTransfers));
            var span = new List<DiskTensor>(spanTransfers);
            using var spanOwner = new Owned(() => TierTensors.DisposeAll(span));
            for (int t = 0; t < spanTransfers; t++)
            {
                span.Add(tiers.Disk.Allocate([elements], ScalarType.Float16, $"profile-disk-{t}"));
            }

            var disk = span[0];
            cpu.Data.fill_(1);
            gpu.Data.fill_(1);
            string mib = $"{bytes / (double)(1 << 20):0} MiB";
            string gpuName = tiers.Gpu.Device.type == DeviceType.CUDA ? "GPU" : "GPU tier (CPU memory)";

            // As the engine streams a weight: from the dtype the CPU tier keeps it in (float16, or bfloat16 under a bfloat16
            // compute) into a reused buffer of the compute dtype on the GPU tier: a copy, or float16 widened to float32.
            var home = weight ?? cpu;
            home.Data.fill_(1);
            using var converted = tiers.Gpu.Allocate([elements], options.ComputeDtype, "profile-ctog");
            double ctog = Bandwidth(bytes, () =>
            {
                using var conversion = TierCopy.CopyAs(converted, home);
                conversion.Complete();
            }, options, cancellationToken);
            Report("ctog_bdw", ctog, $"{mib} {weightDtype} CPU -> {options.ComputeDtype} {gpuName} (weight bytes/s)");
            double gtoc = Bandwidth(bytes, () => TierCopy.Copy(cpu, gpu), options, cancellationToken);
            Report("gtoc_bdw_cache", gtoc, $"{mib} {gpuName} -> CPU");
            // Hidden states are a few MiB per store: the same link at that size.
            long hiddenBytes = Math.Min(bytes, 8L << 20);
            var hiddenRange = new[] { new IndexRange(0, hiddenBytes / 2) };
            double gtocHidden = Bandwidth(hiddenBytes, () => TierCopy.Copy(cpu, hiddenRange, gpu, hiddenRange), options, cancellationToken);
            Report("gtoc_bdw_hidden", gtocHidden, $"{hiddenBytes >> 20} MiB {gpuName} -> CPU");

            string io = options.DirectIo ? "O_DIRECT" : "buffered";
            string spanText = $"{spanTransfers} x {mib} distinct, in turn for {options.SecondsPerMeasure:0.##} s, sustained";
            double ctod = Sustained(bytes, spanTransfers, t => TierCopy.Copy(span[t], cpu), options, cancellationToken);
            Report("ctod_bdw_cache_p", ctod, $"{spanText}: CPU -> disk ({io})");
            double ctodHidden = Bandwidth(hiddenBytes, () => TierCopy.Copy(disk, hiddenRange, cpu, hiddenRange), options, cancellationToken);
            Report("ctod_bdw_hidden_p", ctodHidden, $"{hiddenBytes >> 20} MiB CPU -> disk ({io})");
            Report("ctod_bdw_g", ctodHidden, "as ctod_bdw_hidden_p (decode stores are hidden-sized)");
            double dtoc = Sustained(bytes, spanTransfers, t => TierCopy.Copy(cpu, span[t]), options, cancellationToken);
            Report("dtoc_bdw", dtoc, $"{spanText}: disk -> CPU ({io})");
            // Not a rate but what the two rates hold for: bench compares it with the bytes a run reads a step.
            values[HardwareProfile.DiskSpanBytesName] = (double)spanTransfers * bytes;

            var device = tiers.Gpu.Device;
            var dtype = options.ComputeDtype;
            string on = $"{dtype} on {gpuName}";
            Report("mm_flops_p", Matmul(PrefillRows, device, dtype, options, cancellationToken), $"({PrefillRows} x {Hidden}) @ ({Hidden} x {Ffn}) {on}");
            Report("mm_flops_g", Matmul(DecodeRows, device, dtype, options, cancellationToken), $"({DecodeRows} x {Hidden}) @ ({Hidden} x {Ffn}) {on}");
            // Attention's batched products compute in its own dtype (float32 on the CPU), as the engine's do.
            var attentionDtype = SegmentAttention.AttentionCompute(new ComputeSettings(dtype), device).Dtype;
            string attentionOn = $"{attentionDtype} (attention's dtype) on {gpuName}";
            Report("bmm_flops_p", Bmm(PrefillSeq, PrefillSeq, device, attentionDtype, options, cancellationToken),
                $"{HeadRows} x ({PrefillSeq} x {HeadDim}) @ ({HeadDim} x {PrefillSeq}) {attentionOn}");
            // Decode attention over a cache in CPU memory runs in CpuDecodeAttention, over the cache as stored: the compute's
            // dtype where the compute runs on the CPU (as it keeps its cache), FlexGen's float16 beside CUDA.
            var cpuCache = device.type == DeviceType.CPU ? dtype : ScalarType.Float16;
            var (attentionRate, attentionText) = DecodeAttention(device, attentionDtype, cpuCache, options, cancellationToken);
            Report("bmm_flops_g", attentionRate, $"{attentionText} on {gpuName}");
            if (device.type == DeviceType.CPU)
            {
                // With the GPU tier in CPU memory that was the CPU's attention already: measured once.
                Report("cpu_flops", attentionRate, $"{attentionText} on the CPU (bmm_flops_g's measurement)");
            }
            else
            {
                var (cpuRate, cpuText) = DecodeAttention(CPU, ScalarType.Float32, cpuCache, options, cancellationToken);
                Report("cpu_flops", cpuRate, $"{cpuText} on the CPU");
            }
            Report(HardwareProfile.CompBdwName, Dequantize(device, dtype, options, cancellationToken),
                $"4-bit groups of 64 -> {dtype}, ({CompressedRows} x {CompressedRows}) on {gpuName}");
            Report(HardwareProfile.TaskSecondsName, TaskOverhead(options, cancellationToken),
                $"seconds per layer task of a GPU batch: decode of a {TaskModelHidden}-wide model through the pipeline, {dtype} on {gpuName}");
            // The curve the engine's terms read at a GPU batch's rows (FlexLLMGen's two constants are two of its points): the
            // rate of the engine's own MLP layer math (norm, two matmuls, activation, residual), FLOPs of its matrices.
            using var mlp = new MlpLayers(device, dtype, options.CurveWorkingSetBytes);
            foreach (int rows in CurveRows)
            {
                double rate = mlp.Rate(rows, options with { SecondsPerMeasure = options.SecondsPerMeasure / 4 }, cancellationToken);
                curve.Add((rows, rate));
                progress?.Report(new ProfileStep($"{HardwareProfile.MmFlopsRowsName}[{rows}]", rate,
                    $"MLP layer, {rows} rows of hidden {CurveHidden}, {on}, {mlp.Copies} copies of its weights in turn"));
            }
            var (share, readRate) = ShareWhileDiskReads(mlp, span, cpu, bytes, options, cancellationToken);
            Report(HardwareProfile.MatmulShareWhileDiskReadsName, share,
                $"MLP layer, {ShareRows} rows, {on}, while the disk tier reads beside it ({readRate / 1e9:0.00} GB/s, {io}): share of its rate alone");
            Report(HardwareProfile.DiskShareWhileComputingName, Math.Min(1, readRate / dtoc),
                $"the disk tier's reads beside that layer ({readRate / 1e9:0.00} GB/s, {io}): share of dtoc_bdw ({dtoc / 1e9:0.00} GB/s)");
        }
        finally
        {
            // The measurements' OpenMP team would throttle the engine's compute that runs after them (OpenMpTeams).
            OpenMpTeams.Release();
            try
            {
                if (Directory.Exists(scratch))
                {
                    Directory.Delete(scratch, recursive: true);
                }
            }
            catch (IOException)
            {
            }
        }

        (values["c1"], values["c2"], values["c3"]) = HardwareProfile.DefaultCorrection;
        return HardwareProfile.FromNamed(values) with { MmFlopsByRows = curve };
    }

    /// <summary>
    /// The share of its rate the MLP layer keeps while the disk tier reads beside it (mm_share_dtoc), and the disk's read
    /// rate meanwhile: the layer's mean rate alone, with the span read in turn on another thread (as the disk tier's actor
    /// reads beside the compute), and alone again; the reading measured against the mean of the two alone. At most 1.
    /// </summary>
    private static (double Share, double ReadBytesPerSecond) ShareWhileDiskReads(MlpLayers mlp, IReadOnlyList<DiskTensor> span, TieredTensor into,
        long transferBytes, HardwareProfileOptions options, CancellationToken token)
    {
        double seconds = options.SecondsPerMeasure / 2;
        return mlp.Measure(ShareRows, (flops, step) =>
        {
            step();
            double before = MeanRate(flops, step, seconds, token);
            using var stop = new CancellationTokenSource();
            var reads = Task.Factory.StartNew(() =>
            {
                var clock = Stopwatch.StartNew();
                long moved = 0;
                for (int t = 0; !stop.IsCancellationRequested; t = (t + 1) % span.Count)
                {
                    using var scope = NewDisposeScope();
                    TierCopy.Copy(into, span[t]);
                    moved += transferBytes;
                }
                return moved / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            double beside;
            try
            {
                beside = MeanRate(flops, step, seconds, token);
            }
            finally
            {
                // The reader is done with the span before anything frees it, also when the measuring failed.
                stop.Cancel();
                Task.WaitAny(reads);
            }
            double readRate = reads.GetAwaiter().GetResult();
            double after = MeanRate(flops, step, seconds, token);
            return (Math.Min(1, beside / ((before + after) / 2)), readRate);
        });
    }

    /// <summary>Units of work per second over repetitions for the time given (at least <see cref="MinTimedSteps"/>): the mean, not the best.</summary>
    private static double MeanRate(double work, Action step, double seconds, CancellationToken token)
    {
        var clock = Stopwatch.StartNew();
        int steps = 0;
        do
        {
            token.ThrowIfCancellationRequested();
            step();
            steps++;
        }
        while (clock.Elapsed.TotalSeconds < seconds || steps < MinTimedSteps);
        Synchronize();
        return steps * work / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
    }

    private static double Matmul(long rows, Device device, ScalarType dtype, HardwareProfileOptions options, CancellationToken token)
    {
        using var scope = NewDisposeScope();
        var x = randn([rows, Hidden], dtype: dtype, device: device);
        var w = randn([Ffn, Hidden], dtype: dtype, device: device);
        double flops = 2.0 * rows * Hidden * Ffn;
        var compute = new ComputeSettings(dtype);
        return Rate(flops, () => LayerMath.Linear(x, w, null, compute).Dispose(), options, token);
    }

    private static double Bmm(long queries, long keys, Device device, ScalarType dtype, HardwareProfileOptions options, CancellationToken token)
    {
        using var scope = NewDisposeScope();
        var q = randn([HeadRows, queries, HeadDim], dtype: dtype, device: device);
        var k = randn([HeadRows, HeadDim, keys], dtype: dtype, device: device);
        double flops = 2.0 * HeadRows * queries * HeadDim * keys;
        return Rate(flops, () => torch.bmm(q, k).Dispose(), options, token);
    }

    /// <summary>
    /// Decode attention as the engine runs it on <paramref name="device"/>: over a cache in CPU memory
    /// <see cref="CpuDecodeAttention"/>'s one pass per cached row (scores, softmax, weighted values) over a
    /// <paramref name="cpuCache"/> cache whose rows' positions are each one run in memory (the engine's row-major home);
    /// elsewhere, or without the kernel, libtorch's batched scores in <paramref name="attentionDtype"/>. One query per row
    /// over <see cref="DecodeSeq"/> positions, larger than any cache level; the kernel's FLOPs are the scores' and the
    /// values', as the cost model counts attention's (4 x rows x positions x head_dim).
    /// </summary>
    private static (double Rate, string Text) DecodeAttention(Device device, ScalarType attentionDtype, ScalarType cpuCache,
        HardwareProfileOptions options, CancellationToken token)
    {
        if (device.type != DeviceType.CPU || !CpuDecodeAttention.Available)
        {
            return (Bmm(1, DecodeSeq, device, attentionDtype, options, token),
                $"{HeadRows} x (1 x {HeadDim}) @ ({HeadDim} x {DecodeSeq}) {attentionDtype} (attention's dtype)");
        }

        using var scope = NewDisposeScope();
        var keys = randn([HeadRows, DecodeSeq, HeadDim]).to(cpuCache).permute(1, 0, 2); // (t, r, d)
        var values = randn([HeadRows, DecodeSeq, HeadDim]).to(cpuCache).permute(1, 0, 2); // (t, r, d)
        var query = randn([HeadRows, 1, HeadDim]); // (r, 1, d)
        var newKey = randn([1, HeadRows, HeadDim]); // (1, r, d)
        var newValue = randn([1, HeadRows, HeadDim]); // (1, r, d)
        var mask = ones([HeadRows, DecodeSeq + 1], ScalarType.Bool); // (r, t + 1)
        double flops = 4.0 * HeadRows * DecodeSeq * HeadDim;
        double rate = Rate(flops, () =>
        {
            using var attended = CpuDecodeAttention.TryAttend(query, newKey, newValue, mask, [(keys, values)], kvHeads: 1, maskValue: -1e4)
                ?? throw new InvalidOperationException("CpuDecodeAttention did not take the profile's decode attention");
        }, options, token);
        return (rate, $"decode attention of {HeadRows} rows over {DecodeSeq} cached positions of {HeadDim}, {cpuCache} cache, row by row");
    }

    /// <summary>
    /// The engine's own time per layer task of a GPU batch (dispatch, buffers, the many small ops of a layer): the decode
    /// of a model too narrow for its FLOPs to count (the first family's, hidden <see cref="TaskModelHidden"/>), all on the
    /// GPU tier, through the real pipeline; its decode time over the tasks it ran.
    /// </summary>
    private static double TaskOverhead(HardwareProfileOptions options, CancellationToken token)
    {
        const int Blocks = 4, GpuBatch = 8, PromptLen = 8, GenLen = 16;
        var model = ModelFamilies.All[0].OfSize("profile-tasks", Blocks, (int)TaskModelHidden, 4, 256, 64);
        string folder = Path.Combine(options.OffloadDirectory, $"flexgen-profile-tasks-{Environment.ProcessId}-{Guid.NewGuid():N}");
        var policy = Policy.FromPercent([.. Policy.AllGpuPercent], GpuBatch, 1);
        var settings = new EngineSettings
        {
            Model = model,
            DummyWeights = true,
            Policy = policy,
            OffloadDirectory = folder,
            Compute = new ComputeSettings(options.ComputeDtype),
            CpuCompute = options.ComputeDtype == ScalarType.Float32 ? ComputeSettings.Float32 : ComputeSettings.BFloat16,
        };
        try
        {
            OffloadFolders.CreatePrivate(folder);
            return Task.Run(async () =>
            {
                await using var flexgen = FlexGenSystem.Start(settings, "flexgen-profile", Hosting.StandardErrorLogging.Config("WARNING"));
                var prompts = Enumerable.Range(0, GpuBatch)
                    .Select(r => Enumerable.Range(0, PromptLen).Select(c => (long)(3 + (r * 31 + c * 7) % 250)).ToImmutableArray())
                    .ToImmutableArray();
                double best = double.MaxValue;
                var total = Stopwatch.StartNew();
                // A warm-up, then the best of the repetitions in the time given (at least one).
                await flexgen.GenerateAsync(new GenerateRequest { PromptIds = prompts, Generation = new(2) }, token).ConfigureAwait(false);
                do
                {
                    var result = await flexgen.GenerateAsync(new GenerateRequest { PromptIds = prompts, Generation = new(GenLen) }, token).ConfigureAwait(false);
                    best = Math.Min(best, result.Timings.Decode.TotalSeconds);
                }
                while (total.Elapsed.TotalSeconds < options.SecondsPerMeasure);
                int tasksPerStep = model.Layers(policy.SepLayer).Count;
                return best / ((GenLen - 1) * tasksPerStep);
            }, token).GetAwaiter().GetResult();
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The first registered family's MLP layer of hidden <see cref="CurveHidden"/> with several copies of its weights, taken
    /// in turn, one per step: each step reads its weights from memory, as a model's layers do. Owns the copies.
    /// </summary>
    private sealed class MlpLayers : IDisposable
    {
        private readonly ModelConfig _config = ModelFamilies.All[0].OfSize("profile", 1, (int)CurveHidden, 16, 64, 64);
        private readonly IReadOnlyList<WeightSpec> _specs;
        private readonly List<List<Tensor>> _copies = [];
        private readonly Device _device;
        private readonly ScalarType _dtype;

        public MlpLayers(Device device, ScalarType dtype, long workingSetBytes)
        {
            (_device, _dtype) = (device, dtype);
            _specs = _config.Layers(sepLayer: true).Single(l => l.Kind == LayerKind.Mlp).Weights;
            long layerBytes = _specs.Sum(w => w.ElementCount) * TensorShapes.ElementSize(dtype);
            long copies = Math.Clamp(workingSetBytes / layerBytes, 1, 1024);
            for (int c = 0; c < copies; c++)
            {
                // Owned here, not by the caller's dispose scope.
                _copies.Add(_specs.Select(w => (w.Init == WeightInit.NormScale
                    ? ones([.. w.Shape], dtype: dtype, device: device)
                    : randn([.. w.Shape], dtype: dtype, device: device).mul_(0.02)).DetachFromDisposeScope()).ToList());
            }
        }

        public int Copies => _copies.Count;

        /// <summary>FLOP/s of the layer over <paramref name="rows"/> rows (the best repetition).</summary>
        public double Rate(int rows, HardwareProfileOptions options, CancellationToken token) =>
            Measure(rows, (flops, step) => HardwareProfiler.Rate(flops, step, options, token));

        /// <summary>Hands <paramref name="measure"/> the layer's FLOPs over <paramref name="rows"/> rows and one step of it (the next copy's weights).</summary>
        public T Measure<T>(int rows, Func<double, Action, T> measure)
        {
            using var scope = NewDisposeScope();
            double flops = 2.0 * rows * _specs.Where(w => w.Rank >= 2).Sum(w => w.ElementCount);
            var hidden = randn([rows, 1, CurveHidden], dtype: _dtype, device: _device);
            var compute = _config.Compute();
            var settings = new ComputeSettings(_dtype);
            int next = 0;
            return measure(flops, () => compute.Mlp(hidden, _copies[next++ % _copies.Count], settings).Dispose());
        }

        public void Dispose()
        {
            foreach (var tensor in _copies.SelectMany(c => c)) tensor.Dispose();
            _copies.Clear();
        }
    }

    /// <summary>Float16 bytes per second of dequantizing FlexLLMGen's 4-bit layout into the compute dtype.</summary>
    private static double Dequantize(Device device, ScalarType dtype, HardwareProfileOptions options, CancellationToken token)
    {
        using var scope = NewDisposeScope();
        var weight = randn([CompressedRows, CompressedRows], dtype: ScalarType.Float16, device: device);
        using var packed = GroupQuantizer.Compress(weight, CompressionConfig.DefaultWeight);
        return Rate(2.0 * CompressedRows * CompressedRows, () => GroupQuantizer.Decompress(packed, dtype).Dispose(), options, token);
    }

    private static double Bandwidth(long bytes, Action copy, HardwareProfileOptions options, CancellationToken token) =>
        Rate(bytes, copy, options, token);

    private const int MinTimedSteps = 3;

    /// <summary>
    /// Bytes per second over whole passes through <paramref name="transfers"/> distinct transfers of
    /// <paramref name="transferBytes"/> (<paramref name="step"/> moves the one it is given), for at least the time given: the
    /// mean, as a stream of a model's weights gets it.
    /// </summary>
    private static double Sustained(long transferBytes, int transfers, Action<int> step, HardwareProfileOptions options, CancellationToken token)
    {
        long moved = 0;
        var clock = Stopwatch.StartNew();
        do
        {
            for (int t = 0; t < transfers; t++)
            {
                token.ThrowIfCancellationRequested();
                step(t);
                moved += transferBytes;
            }
        }
        while (clock.Elapsed.TotalSeconds < options.SecondsPerMeasure);

        return moved / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
    }

    /// <summary>
    /// Units of work per second of the fastest repetition: one untimed warm-up, then repetitions for the time given, and
    /// at least <see cref="MinTimedSteps"/>.
    /// </summary>
    private static double Rate(double work, Action step, HardwareProfileOptions options, CancellationToken token)
    {
        token.ThrowIfCancellationRequested();
        step();
        Synchronize();
        // The best of at least MinTimedSteps: on a VM one step can stall (a 2048-row MLP layer once measured 86 instead
        // of 180-194 GFLOP/s when its time allowed a single step), and a bound from a stalled step is no bound.
        double best = double.MaxValue;
        var total = Stopwatch.StartNew();
        int timed = 0;
        do
        {
            token.ThrowIfCancellationRequested();
            var clock = Stopwatch.StartNew();
            step();
            Synchronize();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
            timed++;
        }
        while (total.Elapsed.TotalSeconds < options.SecondsPerMeasure || timed < MinTimedSteps);

        return work / Math.Max(best, 1e-9);
    }

    private static void Synchronize()
    {
        if (TorchRuntime.CudaAvailable)
        {
            torch.cuda.synchronize();
        }
    }

    /// <summary>Runs its action when disposed (the profile's disk span, freed however the measuring ends).</summary>
    private sealed class Owned(Action release) : IDisposable
    {
        public void Dispose() => release();
    }
}
