namespace FlexGen.Actors.Tests;

using System.Diagnostics;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;

/// <summary>The backend's offload folder: private to the user, gone on dispose; a dead run's folder removed by the next run.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class OffloadFolderTests
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    [Fact]
    public void The_backend_should_create_its_offload_folders_700_and_its_files_600_and_delete_them_on_dispose()
    {
        string root = Fixtures.NewOffloadDir();
        string offload = Path.Combine(root, "made-by-flexgen", "offload");
        try
        {
            // Weights half on disk: the disk tier writes files.
            var policy = new Policy
            {
                GpuBatchSize = 2, NumGpuBatches = 1, WGpuPercent = 0, WCpuPercent = 50, CacheGpuPercent = 100, CacheCpuPercent = 0,
                ActGpuPercent = 100, ActCpuPercent = 0,
            };
            var settings = new EngineSettings { ModelPath = Fixtures.Model, Policy = policy, OffloadDirectory = offload };
            int disposed = 0;
            using (var backend = TorchPipelineBackend.Create(settings, policy))
            {
                backend.Disposed += () => disposed++;
                Assert.Equal(Private, File.GetUnixFileMode(Path.Combine(root, "made-by-flexgen")));
                Assert.Equal(Private, File.GetUnixFileMode(offload));
                Assert.Equal(Private, File.GetUnixFileMode(backend.OffloadFolder));
                var files = Directory.GetFiles(backend.OffloadFolder, "*", SearchOption.AllDirectories);
                Assert.NotEmpty(files);
                Assert.All(files, f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
            }

            Assert.Equal(1, disposed);
            Assert.Empty(Directory.GetFileSystemEntries(offload));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Removing_stale_folders_should_take_only_our_names_of_processes_that_are_not_running()
    {
        string root = Fixtures.NewOffloadDir();
        try
        {
            int dead = DeadPid();
            string stale = Folder(root, $"flexgen-{dead}-{Guid.NewGuid():N}", 3000);
            string live = Folder(root, $"flexgen-{Environment.ProcessId}-{Guid.NewGuid():N}", 10);
            string init = Folder(root, $"flexgen-1-{Guid.NewGuid():N}", 10);
            string otherName = Folder(root, $"flexgen-{dead}-notaguid", 10);
            string otherPrefix = Folder(root, $"flexgen-offload-{dead}-{Guid.NewGuid():N}", 10);
            string upper = Folder(root, $"flexgen-{dead}-{Guid.NewGuid():N}".ToUpperInvariant(), 10);
            string file = Path.Combine(root, $"flexgen-{dead}-{Guid.NewGuid():N}");
            File.WriteAllText(file, "a file, not a folder");
            string target = Folder(root, "elsewhere", 10);
            string link = Path.Combine(root, $"flexgen-{dead}-{Guid.NewGuid():N}");
            Directory.CreateSymbolicLink(link, target);

            var sweep = OffloadFolders.RemoveStale(root);

            Assert.Equal([stale], sweep.Removed);
            Assert.Equal(3000, sweep.FreedBytes);
            Assert.False(Directory.Exists(stale));
            foreach (var kept in new[] { live, init, otherName, otherPrefix, upper, target }) Assert.True(Directory.Exists(kept), kept);
            Assert.True(File.Exists(file));
            Assert.True(Directory.Exists(link));
            Assert.True(File.Exists(Path.Combine(target, "sub", "data.bin")));
            Assert.Equal($"removed 1 offload folder of dead flexgen processes from {root}, freed 2.9 KiB", sweep.Describe());

            // The other prefix, when asked for: only that one.
            var second = OffloadFolders.RemoveStale(root, "flexgen-offload");
            Assert.Equal([otherPrefix], second.Removed);
            Assert.Empty(OffloadFolders.RemoveStale(root).Removed);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void A_pid_should_count_as_running_unless_the_system_says_there_is_no_such_process()
    {
        Assert.True(OffloadFolders.IsProcessRunning(Environment.ProcessId));
        Assert.True(OffloadFolders.IsProcessRunning(1));
        Assert.False(OffloadFolders.IsProcessRunning(DeadPid()));
    }

    /// <summary>The pid of a process that has exited and been reaped.</summary>
    public static int DeadPid()
    {
        using var process = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        process.WaitForExit();
        int pid = process.Id;
        Assert.False(Directory.Exists($"/proc/{pid}"), $"pid {pid} was reused at once");
        return pid;
    }

    private static string Folder(string root, string name, int bytes)
    {
        string path = Path.Combine(root, name);
        Directory.CreateDirectory(Path.Combine(path, "sub"));
        File.WriteAllBytes(Path.Combine(path, "sub", "data.bin"), new byte[bytes]);
        return path;
    }
}
