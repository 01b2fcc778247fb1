namespace FlexGen.Tensors.Tiers;

using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using TorchSharp;

/// <summary>
/// Measures the disk tier's read and write bandwidth on one file of a given size, buffered and with O_DIRECT, next to
/// <c>dd</c> with <c>oflag=direct</c> / <c>iflag=direct</c> on the same file (the <c>flexgen bench-disk</c> command).
/// </summary>
public static partial class DiskBenchmark
{
    /// <summary>One measured transfer.</summary>
    public sealed record Measurement(string Method, string Direction, long Bytes, TimeSpan Elapsed, string Note)
    {
        public double GigabytesPerSecond => Bytes / Elapsed.TotalSeconds / 1e9;
    }

    /// <summary>
    /// Writes and reads a <paramref name="sizeBytes"/> tensor through the disk tier in <paramref name="directory"/>
    /// (buffered, then O_DIRECT), runs dd on the same file, prints a table to <paramref name="output"/> and returns the
    /// measurements. Leaves no file behind.
    /// </summary>
    public static async Task<IReadOnlyList<Measurement>> RunAsync(string directory, long sizeBytes, TextWriter output, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sizeBytes, NativeFile.Alignment);
        sizeBytes = NativeFile.AlignDown(sizeBytes);
        // Before anything is allocated: the data and its read-back take twice the size in memory.
        if (FreeSpaceShortfall(directory, sizeBytes) is { } shortfall)
        {
            throw new IOException($"disk benchmark: {shortfall}");
        }

        var results = new List<Measurement>();
        await output.WriteLineAsync($"disk benchmark: {sizeBytes / (double)(1 << 30):0.###} GiB file in {Path.GetFullPath(directory)}");

        using var cpu = DeviceTier.CreateCpu();
        using var data = cpu.Allocate([sizeBytes], torch.ScalarType.Byte, "bench-data");
        using (var pattern = torch.arange(0, 251, dtype: torch.ScalarType.Byte))
        {
            // A non-constant pattern, so no layer can shortcut zeros.
            data.Data.copy_(pattern.repeat((sizeBytes + 250) / 251).narrow(0, 0, sizeBytes));
        }

        using var readBack = cpu.Allocate([sizeBytes], torch.ScalarType.Byte, "bench-read");
        foreach (var direct in new[] { false, true })
        {
            using var disk = new DiskTier(directory, new DiskTierSettings(DirectIo: direct, IoThreads: 1));
            var method = direct ? "tier O_DIRECT" : "tier buffered";
            using var file = disk.Allocate([sizeBytes], torch.ScalarType.Byte, "bench");

            cancellationToken.ThrowIfCancellationRequested();
            var clock = Stopwatch.StartNew();
            TierCopy.Copy(file, data);
            var written = clock.Elapsed;
            NativeFile.FlushAndDropCache(file.Path);
            var flushed = clock.Elapsed;
            if (direct)
            {
                results.Add(new Measurement(method, "write", sizeBytes, written, disk.DirectIoFellBack ? "FELL BACK to buffered: file system refuses O_DIRECT" : ""));
            }
            else
            {
                results.Add(new Measurement(method, "write", sizeBytes, written, "into the page cache"));
                results.Add(new Measurement(method, "write", sizeBytes, flushed, "incl. fsync"));
            }

            cancellationToken.ThrowIfCancellationRequested();
            clock.Restart();
            TierCopy.Copy(readBack, file);
            results.Add(new Measurement(method, "read", sizeBytes, clock.Elapsed, direct ? "" : "cold page cache"));
            if (!direct)
            {
                clock.Restart();
                TierCopy.Copy(readBack, file);
                results.Add(new Measurement(method, "read", sizeBytes, clock.Elapsed, "warm page cache"));
            }

            if (!SameBytes(readBack.Data, data.Data))
            {
                throw new InvalidOperationException($"Disk benchmark ({method}): the bytes read back differ from those written.");
            }

            if (direct)
            {
                // dd on the very file the tier wrote: same device, same size, same O_DIRECT.
                var blocks = sizeBytes / (8 << 20);
                var (blockSize, count) = blocks > 0 && sizeBytes % (8 << 20) == 0 ? ("8M", blocks) : ("4096", sizeBytes / 4096);
                // One argument each: a path with spaces stays one operand.
                results.Add(await RunDd("write", ["if=/dev/zero", $"of={file.Path}", $"bs={blockSize}", $"count={count}", "oflag=direct", "conv=notrunc"], sizeBytes, cancellationToken));
                results.Add(await RunDd("read", [$"if={file.Path}", "of=/dev/null", $"bs={blockSize}", $"count={count}", "iflag=direct"], sizeBytes, cancellationToken));
            }
        }

        await output.WriteLineAsync($"{"method",-14} {"op",-6} {"GB/s",8} {"seconds",8}  note");
        foreach (var m in results)
        {
            await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{m.Method,-14} {m.Direction,-6} {m.GigabytesPerSecond,8:0.000} {m.Elapsed.TotalSeconds,8:0.000}  {m.Note}"));
        }

        return results;
    }

    /// <summary>Whether two 1-D byte tensors of one length hold the same bytes (compared by 1 GiB spans: a span stops at 2 GiB).</summary>
    private static bool SameBytes(torch.Tensor a, torch.Tensor b)
    {
        const long piece = 1L << 30;
        for (long at = 0; at < a.shape[0]; at += piece)
        {
            long length = Math.Min(piece, a.shape[0] - at);
            using var x = a.narrow(0, at, length);
            using var y = b.narrow(0, at, length);
            if (!x.bytes.SequenceEqual(y.bytes)) return false;
        }

        return true;
    }

    /// <summary>
    /// Null when <paramref name="directory"/>'s file system has room for the benchmark's <paramref name="sizeBytes"/> file;
    /// otherwise what is needed and what is free, in one phrase.
    /// </summary>
    public static string? FreeSpaceShortfall(string directory, long sizeBytes)
    {
        long needed = NativeFile.AlignUp(sizeBytes);
        long free;
        try
        {
            free = new DriveInfo(Path.GetFullPath(directory)).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null; // Unknown: the write itself reports a full disk.
        }

        return free >= needed
            ? null
            : string.Create(CultureInfo.InvariantCulture,
                $"a {FormatBytes(needed)} file does not fit in {Path.GetFullPath(directory)}: {FormatBytes(free)} free ({needed:N0} bytes needed, {free:N0} free)");
    }

    private static string FormatBytes(long bytes) =>
        bytes >= 1L << 30 ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.##} GiB")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.##} MiB");

    /// <summary>
    /// Runs dd once and measures it. On cancellation or any failure while dd runs, dd (with anything it started) is
    /// killed and reaped before this throws, so no dd outlives the benchmark. <paramref name="started"/> sees the
    /// process right after it starts (tests).
    /// </summary>
    internal static async Task<Measurement> RunDd(string direction, IReadOnlyList<string> arguments, long bytes, CancellationToken cancellationToken, Action<Process>? started = null)
    {
        var start = new ProcessStartInfo("dd") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        var clock = Stopwatch.StartNew();
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return new Measurement("dd O_DIRECT", direction, bytes, TimeSpan.Zero, $"dd unavailable: {e.Message}");
        }

        using (process)
        {
            string stderr;
            try
            {
                started?.Invoke(process);
                stderr = await process.StandardError.ReadToEndAsync(cancellationToken);
                await process.WaitForExitAsync(cancellationToken);
            }
            catch
            {
                Stop(process);
                throw;
            }

            var elapsed = clock.Elapsed;
            var summary = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";
            if (process.ExitCode != 0)
            {
                return new Measurement("dd O_DIRECT", direction, bytes, elapsed, $"dd failed: {stderr.Trim()}");
            }

            // dd's own timing ("..., 0.81 s, 1.3 GB/s") excludes process start; prefer it.
            var match = DdSeconds().Match(summary);
            if (match.Success && double.TryParse(match.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds > 0)
            {
                elapsed = TimeSpan.FromSeconds(seconds);
            }

            return new Measurement("dd O_DIRECT", direction, bytes, elapsed, $"dd {arguments[^1]}: {summary.Trim()}");
        }
    }

    /// <summary>Kills <paramref name="process"/> and its descendants and waits (bounded) until it has exited.</summary>
    private static void Stop(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(TimeSpan.FromSeconds(10));
        }
        catch (InvalidOperationException)
        {
            // It exited on its own meanwhile: nothing left to stop.
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // Best effort: the failure that got us here is the one to report.
        }
    }

    [GeneratedRegex(@"copied, ([0-9.eE+-]+) s")]
    private static partial Regex DdSeconds();
}
