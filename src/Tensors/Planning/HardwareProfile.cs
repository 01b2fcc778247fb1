using System.Globalization;
using System.Text.Json;

namespace FlexGen.Tensors.Planning;

/// <summary>
/// The hardware constants of FlexLLMGen's cost model (<c>CostModelConfig</c> in experimental/cost_model.py), by its
/// names and in its units: link bandwidths in bytes/s, matmul rates in FLOP/s, and the three coefficients of its CPU
/// attention rate. They are fitted to measured runs, not read off data sheets (calibration is outside this room).
/// </summary>
public sealed record HardwareProfile
{
    /// <summary>CPU -> GPU (weights and hidden states), bytes/s.</summary>
    public required double CtogBdw { get; init; }

    /// <summary>GPU -> CPU for the KV cache (prefill), bytes/s.</summary>
    public required double GtocBdwCache { get; init; }

    /// <summary>GPU -> CPU for hidden states, bytes/s.</summary>
    public required double GtocBdwHidden { get; init; }

    /// <summary>Disk -> CPU, bytes/s.</summary>
    public required double DtocBdw { get; init; }

    /// <summary>CPU -> disk for the KV cache during prefill, bytes/s.</summary>
    public required double CtodBdwCacheP { get; init; }

    /// <summary>CPU -> disk for hidden states during prefill, bytes/s.</summary>
    public required double CtodBdwHiddenP { get; init; }

    /// <summary>CPU -> disk during decode, bytes/s.</summary>
    public required double CtodBdwG { get; init; }

    /// <summary>GPU matmul rate during prefill, FLOP/s.</summary>
    public required double MmFlopsP { get; init; }

    /// <summary>GPU matmul rate during decode, FLOP/s.</summary>
    public required double MmFlopsG { get; init; }

    /// <summary>GPU batched matmul (attention) rate during prefill, FLOP/s.</summary>
    public required double BmmFlopsP { get; init; }

    /// <summary>GPU batched matmul (attention) rate during decode, FLOP/s.</summary>
    public required double BmmFlopsG { get; init; }

    /// <summary>CPU attention rate before the batch- and width-dependent correction, FLOP/s.</summary>
    public required double CpuFlops { get; init; }

    /// <summary>Coefficient of the correction's product term (log2(64/gbs) * log2(4096/h)).</summary>
    public required double C1 { get; init; }

    /// <summary>Coefficient of the correction's log2(64/gbs) term.</summary>
    public required double C2 { get; init; }

    /// <summary>Coefficient of the correction's log2(4096/h) term.</summary>
    public required double C3 { get; init; }

    /// <summary>
    /// Float16 bytes 4-bit (de)quantized per second on the GPU tier (JSON <c>comp_bdw</c>); beyond FlexLLMGen's names, so
    /// optional: only the compression terms (<see cref="EngineTerms"/>) read it.
    /// </summary>
    public double? CompBdw { get; init; }

    /// <summary>
    /// The GPU tier's matmul rate by the rows of the activation (JSON <c>mm_flops_rows</c>: an object of rows -> FLOP/s),
    /// measured on one weight: FlexLLMGen's two constants (mm_flops_p, mm_flops_g) are this curve at two points. Beyond its
    /// names, so optional: only the engine's terms (<see cref="EngineTerms"/>) read it, at the rows of a GPU batch.
    /// </summary>
    public IReadOnlyList<(int Rows, double Flops)>? MmFlopsByRows
    {
        get;
        init => field = value is null ? null : [.. value.OrderBy(p => p.Rows)];
    }

    /// <summary>The JSON name of <see cref="MmFlopsByRows"/>.</summary>
    public const string MmFlopsRowsName = "mm_flops_rows";

    /// <summary>
    /// The matmul rate at <paramref name="rows"/> activation rows: the curve interpolated linearly in log(rows) and clamped
    /// to its ends, and never below a point at fewer rows (a product over more rows can run as pieces of fewer, so a
    /// measured dip, as this VM's 2048-row point at 150-230 GFLOP/s against 330-360 at 1024, is no bound); without a
    /// curve, <paramref name="flatRate"/> (FlexLLMGen's constant of the phase).
    /// </summary>
    public double MatmulFlops(double rows, double flatRate)
    {
        if (MmFlopsByRows is not { Count: > 0 } curve) return flatRate;
        double fewerRows = curve.TakeWhile(p => p.Rows <= rows).Select(p => p.Flops).DefaultIfEmpty(0).Max();
        if (rows <= curve[0].Rows) return curve[0].Flops;
        if (rows >= curve[^1].Rows) return Math.Max(curve[^1].Flops, fewerRows);
        int i = 1;
        while (curve[i].Rows < rows) i++;
        var (r0, f0) = curve[i - 1];
        var (r1, f1) = curve[i];
        double t = (Math.Log(rows) - Math.Log(r0)) / (Math.Log(r1) - Math.Log(r0));
        return Math.Max(f0 + t * (f1 - f0), fewerRows);
    }

    /// <summary>The JSON names (FlexLLMGen's), in the order the file lists them.</summary>
    public static IReadOnlyList<string> JsonNames { get; } =
    [
        "ctog_bdw", "gtoc_bdw_cache", "gtoc_bdw_hidden", "dtoc_bdw", "ctod_bdw_cache_p", "ctod_bdw_hidden_p", "ctod_bdw_g",
        "mm_flops_p", "mm_flops_g", "bmm_flops_p", "bmm_flops_g", "cpu_flops", "c1", "c2", "c3",
    ];

    /// <summary>The JSON name of <see cref="CompBdw"/>.</summary>
    public const string CompBdwName = "comp_bdw";

    /// <summary>
    /// Seconds of the engine's own work per layer task of a GPU batch, apart from its FLOPs and bytes (JSON <c>task_s</c>):
    /// dispatch, buffers, a layer's small ops. Beyond FlexLLMGen's names, so optional: only the engine's terms read it.
    /// </summary>
    public double? TaskSeconds { get; init; }

    /// <summary>The JSON name of <see cref="TaskSeconds"/>.</summary>
    public const string TaskSecondsName = "task_s";

    /// <summary>
    /// The share of its compute rate the GPU tier's compute keeps while the disk tier reads beside it (JSON
    /// <c>mm_share_dtoc</c>, in (0, 1]): 1 where the two share nothing, as FlexLLMGen's model assumes. Where the GPU tier's
    /// compute runs on the CPU they may share a core: on a 2-core VM an O_DIRECT read beside 2-thread matmuls left them
    /// 0.53-0.62 of their rate (float32 and bfloat16, 64 and 256 rows), the VM's host serving the reads on the guest's
    /// cores. Beyond FlexLLMGen's names, so optional: only the engine's terms read it, for a compute on the CPU with overlap.
    /// </summary>
    public double? MatmulShareWhileDiskReads { get; init; }

    /// <summary>
    /// The share of its rate the compute loses while the disk tier reads beside it: 1 - <see cref="MatmulShareWhileDiskReads"/>,
    /// 0 without one. A step whose disk reads take D and compute C alone takes max(D, C + this * D).
    /// </summary>
    public double MatmulLossWhileDiskReads => 1 - (MatmulShareWhileDiskReads ?? 1);

    /// <summary>The JSON name of <see cref="MatmulShareWhileDiskReads"/>.</summary>
    public const string MatmulShareWhileDiskReadsName = "mm_share_dtoc";

    /// <summary>
    /// The other side of <see cref="MatmulShareWhileDiskReads"/>: the share of its read rate (<see cref="DtocBdw"/>) the disk
    /// tier keeps while the GPU tier's compute runs beside it (JSON <c>dtoc_share_mm</c>, in (0, 1]). On a 2-core VM its
    /// O_DIRECT reads kept 0.7-0.75 beside 2-thread matmuls, the VM's host serving them on the guest's cores. Beyond
    /// FlexLLMGen's names, so optional: the engine weighs it when it decides whether to leave a core to the disk tier.
    /// </summary>
    public double? DiskShareWhileComputing { get; init; }

    /// <summary>The JSON name of <see cref="DiskShareWhileComputing"/>.</summary>
    public const string DiskShareWhileComputingName = "dtoc_share_mm";

    /// <summary>
    /// The bytes of distinct transfers the disk's rates (<see cref="DtocBdw"/>, <see cref="CtodBdwCacheP"/>) were sustained
    /// over (JSON <c>dtoc_span_bytes</c>). A VM's host may cache a span of some GiB and serve it 2-5x faster than a longer
    /// stream (this VM: a 2 GiB span 2.2-7.4 GB/s, OPT-30B's 56 GB 1.3-1.9), so a run that reads more than the span a
    /// step may find the disk slower than the profile. Beyond FlexLLMGen's names, so optional: bench compares it with what
    /// a run read.
    /// </summary>
    public double? DiskSpanBytes { get; init; }

    /// <summary>The JSON name of <see cref="DiskSpanBytes"/>.</summary>
    public const string DiskSpanBytesName = "dtoc_span_bytes";

    private static readonly string[] OptionalNames = [CompBdwName, TaskSecondsName, MatmulShareWhileDiskReadsName, DiskShareWhileComputingName, DiskSpanBytesName];

    private static readonly string[] CorrectionCoefficients = ["c1", "c2", "c3"];

    /// <summary>
    /// A profile from one JSON object with every <see cref="JsonNames"/> key: rates positive, coefficients finite.
    /// Other keys are refused, so a misspelt constant is not silently left out.
    /// </summary>
    /// <exception cref="HardwareProfileException">unreadable file, not one object, a missing, unknown or bad key.</exception>
    public static HardwareProfile Read(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new HardwareProfileException(path, ex is FileNotFoundException or DirectoryNotFoundException ? "file not found" : ex.Message);
        }
        return Parse(text, path);
    }

    /// <summary>This profile as the JSON object <see cref="Read"/> reads: every <see cref="JsonNames"/> key in order.</summary>
    public string ToJson()
    {
        double[] values = [CtogBdw, GtocBdwCache, GtocBdwHidden, DtocBdw, CtodBdwCacheP, CtodBdwHiddenP, CtodBdwG,
            MmFlopsP, MmFlopsG, BmmFlopsP, BmmFlopsG, CpuFlops, C1, C2, C3];
        var named = JsonNames.Select((name, i) => (name, values[i])).ToList();
        if (CompBdw is { } comp) named.Add((CompBdwName, comp));
        if (TaskSeconds is { } task) named.Add((TaskSecondsName, task));
        if (MatmulShareWhileDiskReads is { } share) named.Add((MatmulShareWhileDiskReadsName, share));
        if (DiskShareWhileComputing is { } diskShare) named.Add((DiskShareWhileComputingName, diskShare));
        if (DiskSpanBytes is { } span) named.Add((DiskSpanBytesName, span));
        var lines = named.Select(p => $"  \"{p.name}\": {R(p.Item2)}").ToList();
        if (MmFlopsByRows is { } curve)
            lines.Add($"  \"{MmFlopsRowsName}\": {{ {string.Join(", ", curve.Select(p => $"\"{p.Rows}\": {R(p.Flops)}"))} }}");
        return "{\n" + string.Join(",\n", lines) + "\n}\n";
    }

    private static string R(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>FlexLLMGen's defaults of the CPU attention correction (<c>CostModelConfig</c>: c1, c2, c3).</summary>
    public static (double C1, double C2, double C3) DefaultCorrection { get; } = (0.0168, 0.0328, 0.0621);

    /// <summary>A profile from JSON text (see <see cref="Read"/>); <paramref name="source"/> names it in errors.</summary>
    public static HardwareProfile Parse(string json, string source)
    {
        Dictionary<string, double> values = new(StringComparer.Ordinal);
        List<(int Rows, double Flops)>? curve = null;
        try
        {
            using var document = JsonDocument.Parse(json);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new HardwareProfileException(source, "expected one JSON object of hardware constants");
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == MmFlopsRowsName)
                {
                    curve = ParseCurve(property.Value, source);
                    continue;
                }
                if (!JsonNames.Contains(property.Name) && !OptionalNames.Contains(property.Name))
                    throw new HardwareProfileException(source, $"unknown key \"{property.Name}\" (keys: {string.Join(", ", JsonNames)}; optional {string.Join(", ", OptionalNames)}, {MmFlopsRowsName})");
                if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetDouble(out double value) || !double.IsFinite(value))
                    throw new HardwareProfileException(source, $"\"{property.Name}\" must be a number");
                values[property.Name] = value;
            }
        }
        catch (JsonException ex)
        {
            throw new HardwareProfileException(source, $"not valid JSON ({ex.Message})");
        }
        var missing = JsonNames.Where(n => !values.ContainsKey(n)).ToList();
        if (missing.Count > 0) throw new HardwareProfileException(source, $"missing {string.Join(", ", missing)}");
        // The rates divide bytes and FLOPs; the c's are free coefficients of a correction FlexLLMGen clamps itself.
        foreach (var name in JsonNames.Except(CorrectionCoefficients).Concat(OptionalNames).Where(values.ContainsKey))
            if (values[name] <= 0)
                throw new HardwareProfileException(source, $"\"{name}\" must be positive, got {values[name].ToString(CultureInfo.InvariantCulture)}");
        foreach (var (name, what) in new[] { (MatmulShareWhileDiskReadsName, "the compute rate"), (DiskShareWhileComputingName, "the disk's read rate") })
            if (values.TryGetValue(name, out double kept) && kept > 1)
                throw new HardwareProfileException(source, $"\"{name}\" is a share of {what}, at most 1, got {kept.ToString(CultureInfo.InvariantCulture)}");
        return FromNamed(values) with { MmFlopsByRows = curve };
    }

    /// <summary><c>mm_flops_rows</c>: an object of positive integer rows to positive FLOP/s.</summary>
    private static List<(int Rows, double Flops)> ParseCurve(JsonElement element, string source)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw new HardwareProfileException(source, $"\"{MmFlopsRowsName}\" must be an object of rows -> FLOP/s");
        var curve = new List<(int, double)>();
        foreach (var point in element.EnumerateObject())
        {
            if (!int.TryParse(point.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int rows) || rows < 1
                || point.Value.ValueKind != JsonValueKind.Number || !point.Value.TryGetDouble(out double flops) || !(flops > 0) || !double.IsFinite(flops))
                throw new HardwareProfileException(source, $"\"{MmFlopsRowsName}\": \"{point.Name}\" must be rows >= 1 with a positive FLOP/s");
            curve.Add((rows, flops));
        }
        if (curve.Count == 0) throw new HardwareProfileException(source, $"\"{MmFlopsRowsName}\" has no points");
        return curve;
    }

    /// <summary>A profile from its FlexLLMGen names (<see cref="JsonNames"/>): every name present (the engine's own optional).</summary>
    public static HardwareProfile FromNamed(IReadOnlyDictionary<string, double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        return new HardwareProfile
        {
            CtogBdw = values["ctog_bdw"],
            GtocBdwCache = values["gtoc_bdw_cache"],
            GtocBdwHidden = values["gtoc_bdw_hidden"],
            DtocBdw = values["dtoc_bdw"],
            CtodBdwCacheP = values["ctod_bdw_cache_p"],
            CtodBdwHiddenP = values["ctod_bdw_hidden_p"],
            CtodBdwG = values["ctod_bdw_g"],
            MmFlopsP = values["mm_flops_p"],
            MmFlopsG = values["mm_flops_g"],
            BmmFlopsP = values["bmm_flops_p"],
            BmmFlopsG = values["bmm_flops_g"],
            CpuFlops = values["cpu_flops"],
            C1 = values["c1"],
            C2 = values["c2"],
            C3 = values["c3"],
            CompBdw = values.TryGetValue(CompBdwName, out double comp) ? comp : null,
            TaskSeconds = values.TryGetValue(TaskSecondsName, out double task) ? task : null,
            MatmulShareWhileDiskReads = values.TryGetValue(MatmulShareWhileDiskReadsName, out double share) ? share : null,
            DiskShareWhileComputing = values.TryGetValue(DiskShareWhileComputingName, out double diskShare) ? diskShare : null,
            DiskSpanBytes = values.TryGetValue(DiskSpanBytesName, out double span) ? span : null,
        };
    }
}

/// <summary>A hardware file the planner cannot use; the message names the file and what is wrong.</summary>
public sealed class HardwareProfileException(string source, string reason) : Exception($"{source}: {reason}")
{
    /// <summary>The file (or other source) of the constants.</summary>
    public string Origin { get; } = source;

    public string Reason { get; } = reason;
}
