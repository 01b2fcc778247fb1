namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;

[Collection(TierCollection.Name)]
public class DiskBenchmarkTests
{
    [Fact]
    public async Task Disk_benchmark_should_measure_tier_and_dd_on_a_small_file_and_clean_up()
    {
        var directory = Directory.CreateTempSubdirectory("flexgen-bench-").FullName;
        try
        {
            var output = new StringWriter();
            var results = await DiskBenchmark.RunAsync(directory, 16 << 20, output);
            var text = output.ToString();
            Assert.Contains("tier buffered", text);
            Assert.Contains("tier O_DIRECT", text);
            Assert.Contains("dd O_DIRECT", text);
            Assert.All(results, r => Assert.True(r.GigabytesPerSecond > 0, $"{r.Method} {r.Direction}: {r.Note}"));
            Assert.DoesNotContain(results, r => r.Note.Contains("failed") || r.Note.Contains("FELL BACK"));
            Assert.Empty(Directory.GetFileSystemEntries(directory));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Disk_benchmark_dd_rows_should_work_in_a_folder_whose_path_has_a_space()
    {
        var parent = Directory.CreateTempSubdirectory("flexgen-bench-").FullName;
        var directory = Path.Combine(parent, "with space");
        Directory.CreateDirectory(directory);
        try
        {
            var results = await DiskBenchmark.RunAsync(directory, 1 << 20, new StringWriter());
            var dd = results.Where(r => r.Method == "dd O_DIRECT").ToList();
            Assert.Equal(2, dd.Count);
            Assert.All(dd, r => Assert.DoesNotContain("failed", r.Note));
            Assert.All(dd, r => Assert.True(r.GigabytesPerSecond > 0, r.Note));
            Assert.Empty(Directory.GetFileSystemEntries(directory));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Fact]
    public async Task Disk_benchmark_should_refuse_a_file_larger_than_the_free_space_before_allocating_it()
    {
        var directory = Directory.CreateTempSubdirectory("flexgen-bench-").FullName;
        try
        {
            long free = new DriveInfo(directory).AvailableFreeSpace;
            long size = free + (1L << 30); // more than fits: refused from the numbers, never allocated (it would not fit in memory either)
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var error = await Assert.ThrowsAsync<IOException>(() => DiskBenchmark.RunAsync(directory, size, new StringWriter()));
            Assert.Contains("does not fit in", error.Message);
            Assert.Contains("free", error.Message);
            Assert.Contains("bytes needed", error.Message);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
            Assert.Empty(Directory.GetFileSystemEntries(directory));
            Assert.Null(DiskBenchmark.FreeSpaceShortfall(directory, 1 << 20));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Disk_benchmark_dd_should_be_killed_when_the_run_is_cancelled()
    {
        using var cancellation = new CancellationTokenSource();
        System.Diagnostics.Process? dd = null;
        int ddId = 0;

        // dd that would copy for minutes; cancelled as soon as it runs.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => DiskBenchmark.RunDd(
            "read",
            ["if=/dev/zero", "of=/dev/null", "bs=1M", "count=100000000"],
            1,
            cancellation.Token,
            process =>
            {
                ddId = process.Id;
                dd = System.Diagnostics.Process.GetProcessById(process.Id); // a handle of our own, alive after RunDd disposes its
                cancellation.Cancel();
            }));

        Assert.NotNull(dd);
        using (dd)
        {
            Assert.True(dd.HasExited, $"dd (pid {ddId}) still runs after the cancelled benchmark");
        }
    }

    /// <summary>The 1 GiB run (seconds to minutes): set FLEXGEN_BENCH_DISK=&lt;directory&gt; to run it.</summary>
    [SkippableFact]
    [Trait("Category", "Benchmark")]
    public async Task Disk_benchmark_should_run_on_one_gibibyte_when_asked()
    {
        var directory = Environment.GetEnvironmentVariable("FLEXGEN_BENCH_DISK");
        Skip.If(string.IsNullOrEmpty(directory), "Benchmark: set FLEXGEN_BENCH_DISK to a directory to run it.");
        Directory.CreateDirectory(directory);
        var output = new StringWriter();
        await DiskBenchmark.RunAsync(directory, 1L << 30, output);
        Console.WriteLine(output.ToString());
        File.WriteAllText(Path.Combine(Path.GetTempPath(), "flexgen-bench-disk.txt"), output.ToString());
    }
}
