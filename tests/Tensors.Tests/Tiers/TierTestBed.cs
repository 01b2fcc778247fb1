namespace FlexGen.Tensors.Tests.Tiers;

using System.Diagnostics;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>Tier tests count live torch tensors process-wide, so they run alone, not beside other test classes.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TierCollection
{
    public const string Name = "Tiers (live tensor counts)";
}

/// <summary>A fresh offload directory and tiers for one test; checks on dispose that nothing was left behind.</summary>
public sealed class TierTestBed : IDisposable
{
    private readonly long _liveTensorsAtStart = SettledLiveTensors();

    public TierTestBed(bool directIo = false, long gpuCapacity = long.MaxValue, long diskCapacity = long.MaxValue, string? offloadDirectory = null, int chunkBytes = 8 << 20, bool preallocate = true)
    {
        OffloadDirectory = offloadDirectory ?? Directory.CreateTempSubdirectory("flexgen-tiers-").FullName;
        Tiers = new MemoryTiers(new TierSettings
        {
            OffloadDirectory = OffloadDirectory,
            GpuCapacityBytes = gpuCapacity,
            ForceEmulatedGpu = true,
            Disk = new DiskTierSettings(DirectIo: directIo, IoThreads: 2, CapacityBytes: diskCapacity) { ChunkBytes = chunkBytes, ParallelChunks = 3, Preallocate = preallocate },
        });
    }

    public string OffloadDirectory { get; }

    public MemoryTiers Tiers { get; }

    public long LiveTensorsAtStart => _liveTensorsAtStart;

    /// <summary>Files in the offload directory now.</summary>
    public string[] OffloadFiles => Directory.GetFiles(OffloadDirectory);

    /// <summary>Asserts no offload file, no tier bytes or tensors, and no extra live torch tensor.</summary>
    public void AssertNothingLeft()
    {
        Assert.Empty(OffloadFiles);
        foreach (var stats in Tiers.Stats)
        {
            Assert.True(stats.CurrentBytes == 0 && stats.LiveTensors == 0, $"Tier not empty: {stats}");
        }

        Assert.Equal(_liveTensorsAtStart, SettledLiveTensors());
    }

    /// <summary>Live torch tensors after finalizers of earlier, forgotten tensors have run (so they cannot drop mid-test).</summary>
    private static long SettledLiveTensors()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Tensor.TotalCount;
    }

    public void Dispose()
    {
        Tiers.Dispose();
        try
        {
            Directory.Delete(OffloadDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Deterministic random data of <paramref name="dtype"/>: normal floats or uniform bytes.</summary>
    public static Tensor RandomTensor(long[] shape, ScalarType dtype, int seed)
    {
        using var generator = new Generator((ulong)seed);
        if (dtype == ScalarType.Byte)
        {
            return randint(0, 256, shape, dtype: ScalarType.Byte, generator: generator);
        }

        using var values = randn(shape, dtype: ScalarType.Float32, generator: generator);
        return values.to_type(dtype);
    }

    /// <summary>Bitwise equality (floats compared through their bytes).</summary>
    /// <summary>
    /// Layer <paramref name="layer"/>'s weights as plain tensors on <paramref name="target"/>, read from their homes by
    /// <see cref="TierCopy.ToTorch"/> (decompressed when stored compressed), in the weight specs' order; disposing frees them.
    /// </summary>
    public static LayerTensors CopyLayer(ModelWeights weights, int layer, DeviceTier target)
    {
        var tensors = new List<Tensor>();
        try
        {
            foreach (var home in weights.Layer(layer))
            {
                tensors.Add(TierCopy.ToTorch(home, null, target.Device));
            }

            return new LayerTensors(tensors);
        }
        catch
        {
            tensors.ForEach(t => t.Dispose());
            throw;
        }
    }

    public sealed class LayerTensors(List<Tensor> tensors) : IDisposable
    {
        public int Count => tensors.Count;

        public Tensor this[int index] => tensors[index];

        public void Dispose() => tensors.ForEach(t => t.Dispose());
    }

    public static bool BitEqual(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dtype != b.dtype)
        {
            return false;
        }

        using var ac = a.contiguous();
        using var bc = b.contiguous();
        return ac.bytes.SequenceEqual(bc.bytes);
    }

    /// <summary>Runs a command; returns its exit code and output (for mount/umount/dd).</summary>
    public static (int ExitCode, string Output) Run(string file, string arguments)
    {
        var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output);
    }
}

/// <summary>A small tmpfs mounted for one test (needs root); unmounted and removed on dispose.</summary>
public sealed class TmpfsMount : IDisposable
{
    private TmpfsMount(string path) => Path = path;

    public string Path { get; }

    /// <summary>Mounts a tmpfs with <paramref name="options"/> (e.g. "size=1m" or "ro,size=1m"), or returns null with why not.</summary>
    public static TmpfsMount? TryMount(string options, out string whyNot)
    {
        var path = Directory.CreateTempSubdirectory("flexgen-tmpfs-").FullName;
        var (code, output) = TierTestBed.Run("mount", $"-t tmpfs -o {options} tmpfs {path}");
        if (code != 0)
        {
            Directory.Delete(path);
            whyNot = $"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {output.Trim()}";
            return null;
        }

        whyNot = "";
        return new TmpfsMount(path);
    }

    public void Dispose()
    {
        TierTestBed.Run("umount", Path);
        try
        {
            Directory.Delete(Path);
        }
        catch (IOException)
        {
        }
    }
}
