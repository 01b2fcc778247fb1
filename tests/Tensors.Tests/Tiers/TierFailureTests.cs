namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors;
using FlexGen.Tensors.Tiers;
using TorchSharp;
using static TorchSharp.torch;

[Collection(TierCollection.Name)]
public class TierFailureTests
{
    [Fact]
    public void Disk_tier_should_reject_a_missing_offload_directory()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"flexgen-missing-{Guid.NewGuid():N}");
        var error = Assert.Throws<OffloadDirectoryException>(() => new DiskTier(missing));
        Assert.Contains(missing, error.Message);
        Assert.Contains("does not exist", error.Message);
        Assert.False(Directory.Exists(missing));
    }

    [Fact]
    public void Disk_tier_should_reject_an_offload_path_that_is_a_file()
    {
        var file = Path.GetTempFileName();
        try
        {
            var error = Assert.Throws<OffloadDirectoryException>(() => new MemoryTiers(new TierSettings { OffloadDirectory = file }));
            Assert.Contains("is not a directory", error.Message);
            Assert.Contains(file, error.Message);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [SkippableFact]
    public void Disk_tier_should_reject_a_read_only_offload_directory()
    {
        // Root may write anywhere, so "not writable" is made real with a read-only mount.
        using var mount = TmpfsMount.TryMount("ro,size=1m", out var whyNot);
        Skip.If(mount is null, whyNot);
        var error = Assert.Throws<OffloadDirectoryException>(() => new DiskTier(mount.Path));
        Assert.Contains("is not writable", error.Message);
        Assert.Contains(mount.Path, error.Message);
        Assert.Empty(Directory.GetFileSystemEntries(mount.Path));
    }

    [SkippableTheory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Disk_tier_should_report_a_full_disk_and_leave_nothing_behind(bool directIo, bool preallocate)
    {
        using var mount = TmpfsMount.TryMount("size=1m", out var whyNot);
        Skip.If(mount is null, whyNot);
        using var bed = new TierTestBed(directIo, offloadDirectory: mount.Path, preallocate: preallocate);

        // 2 MiB into a 1 MiB file system: preallocated, the allocation fails; sparse, the write runs out of space.
        var error = Assert.Throws<DiskTierIOException>(() =>
        {
            using var data = torch.ones([1024, 1024], ScalarType.Float16);
            using var onCpu = bed.Tiers.Cpu.CopyOf(data, "cpu-copy");
            using var copy = TierCopy.CopyTo(onCpu, bed.Tiers.Disk, name: "too-big");
        });
        Assert.True(error.IsOutOfSpace, error.Message);
        Assert.Contains("disk full", error.Message);
        Assert.Contains("too-big", error.Message);
        Assert.Contains(preallocate ? "allocation" : "write", error.Message);
        bed.AssertNothingLeft();
    }

    [Fact]
    public void Tier_should_refuse_an_allocation_past_its_capacity_and_leave_nothing_behind()
    {
        using var bed = new TierTestBed(gpuCapacity: 1000, diskCapacity: 100);
        using (var fits = bed.Tiers.Gpu.Allocate([250], ScalarType.Float16, "fits"))
        {
            var error = Assert.Throws<TierBudgetExceededException>(() => bed.Tiers.Gpu.Allocate([251], ScalarType.Float16, "spills"));
            Assert.Equal("gpu", error.Tier);
            Assert.Equal(502, error.RequestedBytes);
            Assert.Equal(500, error.CurrentBytes);
            Assert.Contains("'spills'", error.Message);
            Assert.Equal(500, bed.Tiers.Gpu.Stats.PeakBytes);
        }

        // A mixed allocation whose disk segment does not fit frees the segments it already made.
        var mixed = bed.Tiers.CreateMixed(50, 25, 1);
        Assert.Throws<TierBudgetExceededException>(() => mixed.Allocate([4, 8, 8], ScalarType.Float16, "cache"));

        // So does a copy into a tier that is too small.
        using (var source = bed.Tiers.Cpu.Allocate([200], ScalarType.Byte, "source"))
        {
            Assert.Throws<TierBudgetExceededException>(() => TierCopy.CopyTo(source, bed.Tiers.Disk));
        }

        bed.AssertNothingLeft();
    }

    [Fact]
    public void Tier_options_should_take_the_plan_capacities()
    {
        var options = TierSettings.For(new TierCapacities(GpuBytes: 1000, DiskBytes: 50), "/tmp", pinCpuMemory: true);
        Assert.Equal(1000, options.GpuCapacityBytes);
        Assert.Equal(long.MaxValue, options.CpuCapacityBytes);
        Assert.Equal(50, options.Disk.CapacityBytes);
        Assert.True(options.PinCpuMemory);
        using var tiers = new MemoryTiers(options with { ForceEmulatedGpu = true });
        Assert.Equal(1000, tiers.Gpu.Stats.CapacityBytes);
        Assert.Equal(50, tiers.Disk.Stats.CapacityBytes);
        Assert.False(tiers.Cpu.PinMemory && !TorchRuntime.CudaAvailable, "pinning needs CUDA");
    }

    [Fact]
    public void Mixed_tier_should_reject_a_shape_without_the_split_dimension_whichever_allocate_is_called()
    {
        using var bed = new TierTestBed();
        var mixed = bed.Tiers.CreateMixed(25, 50, 2);
        var byPercent = Assert.Throws<ArgumentException>(() => mixed.Allocate([8], ScalarType.Float16, "flat"));
        var bySegments = Assert.Throws<ArgumentException>(() => mixed.Allocate([8], ScalarType.Float16, [2, 4, 2], "flat"));
        Assert.Equal("shape", byPercent.ParamName);
        Assert.Equal("shape", bySegments.ParamName);
        Assert.Contains("[8]", bySegments.Message);
        bed.AssertNothingLeft();
    }

    [Fact]
    public void Disk_tier_should_delete_its_files_when_disposed()
    {
        var directory = Directory.CreateTempSubdirectory("flexgen-tiers-").FullName;
        try
        {
            var disk = new DiskTier(directory);
            var a = disk.Allocate([16, 16], ScalarType.Float32, "a");
            disk.Allocate([8], ScalarType.Float16, "b");
            Assert.Equal(2, Directory.GetFiles(directory).Length);
            a.Dispose();
            Assert.Single(Directory.GetFiles(directory));
            disk.Dispose();
            Assert.Empty(Directory.GetFiles(directory));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Accounting_should_track_current_peak_and_counts()
    {
        using var bed = new TierTestBed();
        var cpu = bed.Tiers.Cpu;
        var a = cpu.Allocate([10, 10], ScalarType.Float32, "a");
        var b = cpu.Allocate([100], ScalarType.Float16, "b");
        Assert.Equal(new TierStats("cpu", 600, 600, 2, 2, long.MaxValue), cpu.Stats);
        a.Dispose();
        a.Dispose(); // idempotent
        Assert.Equal(new TierStats("cpu", 200, 600, 1, 2, long.MaxValue), cpu.Stats);
        b.Dispose();
        Assert.Contains("cpu: 0 B in 0 tensors (peak 600 B", bed.Tiers.Describe());
        bed.AssertNothingLeft();
    }
}
