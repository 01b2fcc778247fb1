namespace FlexGen.Host.Tests;

using System.Diagnostics;

/// <summary>Offload folders: private modes, a dead run's folder removed by the next run (and said), nothing else touched.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class OffloadHygieneTests
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [Fact]
    public async Task The_next_run_should_remove_only_the_offload_folders_of_dead_flexgen_processes_and_say_how_much_it_freed()
    {
        using var folder = new TempFolder();
        int dead = DeadPid();
        string planted = Path.Combine(folder.Path, "planted");
        string stale = Make(planted, $"flexgen-{dead}-{Guid.NewGuid():N}", 5 << 20);
        Make(planted, $"flexgen-{Environment.ProcessId}-{Guid.NewGuid():N}", 100); // a running process's (this one)
        Make(planted, $"flexgen-1-{Guid.NewGuid():N}", 100);                       // init's
        Make(planted, $"flexgen-{dead}-keep-me", 100);                              // not our naming
        var before = FolderSnapshot.Of(planted);
        foreach (var key in before.Keys.Where(k => k.StartsWith(Path.GetFileName(stale), StringComparison.Ordinal)).ToList()) before.Remove(key);

        var result = await CliRunner.RunAsync("generate", "--offload-dir", planted, "--percent", "0", "0", "100", "0", "100", "0", "--trace", "", "--gen-len", "2");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"removed 1 offload folder of dead flexgen processes from {planted}, freed 5.0 MiB", result.Error);
        Assert.False(Directory.Exists(stale));
        Assert.Equal(before, FolderSnapshot.Of(planted)); // the live one and the other name untouched, the run's own folder gone

        // A folder FlexGen makes is 700, every level of it.
        string offload = Path.Combine(folder.Path, "new", "offload");
        var second = await CliRunner.RunAsync("generate", "--offload-dir", offload, "--trace", "", "--gen-len", "1", "--percent", "0", "0", "100", "0", "100", "0");
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.DoesNotContain("removed", second.Error);
        Assert.Equal(Private, File.GetUnixFileMode(Path.Combine(folder.Path, "new")));
        Assert.Equal(Private, File.GetUnixFileMode(offload));
        Assert.Empty(FolderSnapshot.Names(offload));
    }

    [Fact]
    public async Task Input_ids_that_are_a_link_loop_should_be_a_usage_error_naming_the_flag()
    {
        using var folder = new TempFolder();
        string a = folder.File("a.npy"), b = folder.File("b.npy");
        File.CreateSymbolicLink(a, b);
        File.CreateSymbolicLink(b, a);

        var result = await CliRunner.RunAsync("generate", "--input-ids", a, "--trace", "");

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.StartsWith($"error: --input-ids {a}: ", result.Error);
        Assert.DoesNotContain("failed:", result.Error);
        Assert.Equal(["a.npy", "b.npy"], FolderSnapshot.Names(folder.Path));
    }

    [Fact]
    public async Task Bench_disk_should_refuse_a_size_larger_than_the_free_space_with_the_numbers_before_allocating()
    {
        using var folder = new TempFolder();
        long free = new DriveInfo(folder.Path).AvailableFreeSpace;
        if (free >= 1000L << 30) return; // this file system has room for the largest --size-gb
        var clock = Stopwatch.StartNew();

        var result = await CliRunner.RunAsync("bench-disk", "--size-gb", "1000", "--offload-dir", folder.Path);

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains("error: --size-gb 1000: a 1000 GiB file does not fit in", result.Error);
        Assert.Contains("bytes needed", result.Error);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Empty(FolderSnapshot.Names(folder.Path));
    }

    private static int DeadPid()
    {
        using var process = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        process.WaitForExit();
        Assert.False(Directory.Exists($"/proc/{process.Id}"), $"pid {process.Id} was reused at once");
        return process.Id;
    }

    private static string Make(string root, string name, int bytes)
    {
        string path = Path.Combine(root, name);
        Directory.CreateDirectory(path);
        File.WriteAllBytes(Path.Combine(path, "weights.bin"), new byte[bytes]);
        return path;
    }
}
