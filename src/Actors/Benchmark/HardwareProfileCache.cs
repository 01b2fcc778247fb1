namespace FlexGen.Actors.Benchmark;

using System.Security.Cryptography;
using System.Text;
using FlexGen.Tensors;
using FlexGen.Tensors.Planning;
using static TorchSharp.torch;

/// <summary>
/// Hardware profiles measured once per machine and compute dtype and kept as files: bench's bounds and
/// <c>--policy auto</c> read the cached one, and measure it (<see cref="HardwareProfiler"/>) on first use. The folder is
/// <c>$FLEXGEN_CACHE_DIR</c>, else <c>$XDG_CACHE_HOME/flexgen</c>, else <c>~/.cache/flexgen</c>; a file is named by the
/// machine (host name, cores, CPU model), the device (cpu or cuda) and the dtype, e.g.
/// <c>hardware-myhost-2c-1a2b3c4d-cpu-float32.json</c>.
/// </summary>
public sealed class HardwareProfileCache(string directory)
{
    /// <summary>The environment variable that moves the cache (tests point it at a temp folder).</summary>
    public const string DirectoryVariable = "FLEXGEN_CACHE_DIR";

    private static readonly Lock Measuring = new();

    public string Directory { get; } = Path.GetFullPath(directory ?? throw new ArgumentNullException(nameof(directory)));

    /// <summary>The cache of this user (see the class summary for how it is found).</summary>
    public static HardwareProfileCache Default => new(DefaultDirectory());

    public static string DefaultDirectory()
    {
        if (Environment.GetEnvironmentVariable(DirectoryVariable) is { Length: > 0 } given) return given;
        string cacheHome = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cacheHome, "flexgen");
    }

    /// <summary>The file of this machine's profile in <paramref name="computeDtype"/>.</summary>
    public string PathFor(ScalarType computeDtype) =>
        Path.Combine(Directory, $"hardware-{MachineKey()}-{(TorchRuntime.CudaAvailable ? "cuda" : "cpu")}-{computeDtype.ToString().ToLowerInvariant()}.json");

    /// <summary>
    /// The cached profile for <paramref name="computeDtype"/>, or a fresh measurement (with <paramref name="options"/>'s
    /// dtype replaced) written to the cache first. One measurement at a time in this process; the file is written whole
    /// (a temp file renamed), so a concurrent reader never sees half of one.
    /// </summary>
    /// <returns>The profile and the file it is kept in; <c>Measured</c> says whether it was measured now.</returns>
    /// <exception cref="HardwareProfileException">a cached file that cannot be read (its path and the reason).</exception>
    public (HardwareProfile Profile, string Path, bool Measured) LoadOrMeasure(ScalarType computeDtype, HardwareProfileOptions options,
        IProgress<ProfileStep>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        string path = PathFor(computeDtype);
        lock (Measuring)
        {
            if (File.Exists(path)) return (HardwareProfile.Read(path), path, false);
            var profile = HardwareProfiler.Measure(options with { ComputeDtype = computeDtype }, progress, cancellationToken);
            System.IO.Directory.CreateDirectory(Directory);
            string temp = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllText(temp, profile.ToJson());
            File.Move(temp, path, overwrite: true);
            return (profile, path, true);
        }
    }

    /// <summary>
    /// Bumped when the profiler measures a constant differently (2: ctog converts into a reused buffer, as the engine
    /// streams; 3: the disk's rates sustained over distinct transfers, the MLP curve's weights read from memory; 4: the
    /// compute's share beside the disk's reads, mm_share_dtoc; 5: the MLP curve's bfloat16 layer multiplies with the weight
    /// on the left at 32 to 128 rows, as the engine now does; 6: task_s through a pipeline that queues up to 8 parts per tier
    /// actor, not 2; 7: matmuls through the engine's own projection, bfloat16 through MKL on a CPU without bfloat16
    /// instructions as the engine now does, and batched products in attention's dtype, float32 on the CPU; 8: up to 8 rows
    /// through SmallRowLinear's kernel, and the disk span recorded, dtoc_span_bytes; 9: decode attention over a cache in
    /// CPU memory, bmm_flops_g and cpu_flops, through CpuDecodeAttention's whole pass as the engine attends, not libtorch's
    /// batched scores), so older cached files are measured again.
    /// </summary>
    public const int ProfilerVersion = 9;

    /// <summary>
    /// Host name, cores and a short hash of the CPU model, the profiler's version, the preloaded libraries
    /// (<c>LD_PRELOAD</c>: flexgen preloads MKL's Intel code paths on AMD, which changes the float32 rates) and glibc's
    /// tunables (<c>GLIBC_TUNABLES</c>: flexgen backs malloc with huge pages, which changes the rates of large
    /// products): a profile belongs to one machine as this process runs on it.
    /// </summary>
    public static string MachineKey()
    {
        string host = new([.. Environment.MachineName.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_')]);
        string cpu = (CpuInfo.Read() is { } cpuinfo ? CpuInfo.Line(cpuinfo, "model name") : null) ?? "";
        string preloaded = string.Join(',', (Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "")
            .Split([':', ' '], StringSplitOptions.RemoveEmptyEntries).Select(Path.GetFileName));
        string tunables = Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "";
        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{cpu}|v{ProfilerVersion}|{preloaded}|{tunables}")))[..8];
        return $"{host}-{Environment.ProcessorCount}c-{hash}";
    }
}
