namespace FlexGen.Host.Tests;

using System.Globalization;
using System.Text.RegularExpressions;
using FlexGen.Host.Cli;

/// <summary>The machine's CPU time per bench phase (<see cref="MachineCpuTime"/>, <see cref="PhaseCpuTime"/>).</summary>
public class MachineCpuTimeTests
{
    // This project's VM (Linux 6.18, 2 cores): the aggregate line, then per-core lines and the rest.
    private const string ProcStat =
        "cpu  1000376 356 263280 776514 68898 0 4113 90133 0 0\n" +
        "cpu0 491535 182 125936 417771 22142 0 288 44595 0 0\n" +
        "cpu1 508840 173 137343 358743 46755 0 3825 45537 0 0\n" +
        "intr 10277739 0 0 0\nctxt 99229124\n";

    [Fact]
    public void Proc_stat_should_give_busy_idle_and_stolen_ticks_of_all_cores()
    {
        var time = MachineCpuTime.Parse(ProcStat);

        Assert.Equal(new MachineCpuTime(Busy: 1000376 + 356 + 263280 + 0 + 4113, Idle: 776514 + 68898, Steal: 90133), time);
    }

    [Fact]
    public void A_kernel_without_the_steal_field_should_count_no_steal_and_a_text_without_counters_nothing()
    {
        Assert.Equal(new MachineCpuTime(Busy: 60, Idle: 40, Steal: 0), MachineCpuTime.Parse("cpu  10 20 30 40\n"));
        Assert.Null(MachineCpuTime.Parse("cpu0 1 2 3 4 5 6 7 8\n")); // a core's line is not the machine's
        Assert.Null(MachineCpuTime.Parse("cpu  1 2 x 4 5 6 7 8\n"));
        Assert.Null(MachineCpuTime.Parse("cpu  1 2 3\n"));
        Assert.Null(MachineCpuTime.Parse(""));
    }

    [Fact]
    public void A_phase_should_be_described_as_shares_of_the_ticks_between_its_marks()
    {
        var start = new MachineCpuTime(Busy: 1000, Idle: 500, Steal: 100);
        var end = new MachineCpuTime(Busy: 1780, Idle: 580, Steal: 240);

        var phase = end - start;

        Assert.Equal(new MachineCpuTime(780, 80, 140), phase);
        Assert.Equal("busy 78%, idle 8%, stolen by the hypervisor 14%", phase.Describe());
        Assert.Null((start - start).Describe()); // no tick counted: no shares to give
    }

    [Fact]
    public void This_machines_counters_should_only_grow()
    {
        if (!File.Exists("/proc/stat")) return; // not Linux: nothing to read (Read gives null, bench prints no line)

        var before = MachineCpuTime.Read()!;
        Thread.SpinWait(50_000_000);
        var after = MachineCpuTime.Read()!;

        var elapsed = after - before;
        Assert.True(elapsed.Busy >= 0 && elapsed.Idle >= 0 && elapsed.Steal >= 0, elapsed.ToString());
        Assert.True(elapsed.Total > 0, $"{before} -> {after}");
    }

    [Fact]
    public async Task Bench_should_print_the_machines_cpu_time_during_prefill_and_decode()
    {
        if (!File.Exists("/proc/stat")) return;
        using var folder = new TempFolder();
        string hardware = TestHardwareCache.WriteFile(folder);

        var result = await CliRunner.RunAsync("bench", "--model", TestPaths.BundledModel, "--prompt-len", "8", "--gen-len", "4",
            "--gpu-batch-size", "2", "--no-log", "--warmup", "false", "--compute-dtype", "float32", "--hardware", hardware);

        Assert.True(result.ExitCode == 0, result.ToString());
        var line = Regex.Match(result.Output,
            @"^machine CPU \(/proc/stat, all cores; the bounds assume the whole CPU\): prefill (?<p>.*); decode (?<d>.*)$", RegexOptions.Multiline);
        Assert.True(line.Success, result.Output);
        foreach (var phase in new[] { line.Groups["p"].Value, line.Groups["d"].Value })
        {
            // The bundled model's phases take milliseconds: one may fall within a clock tick.
            if (phase == "under one clock tick") continue;
            var shares = Regex.Match(phase, @"^busy (\d+)%, idle (\d+)%, stolen by the hypervisor (\d+)%$");
            Assert.True(shares.Success, phase);
            // Shares of one phase's ticks, each rounded: they add up to 100 within the roundings.
            Assert.InRange(Enumerable.Range(1, 3).Sum(g => int.Parse(shares.Groups[g].Value, CultureInfo.InvariantCulture)), 99, 101);
        }
        // Printed after the bounds it qualifies.
        Assert.True(result.Output.IndexOf("  total:", StringComparison.Ordinal) < line.Index, result.Output);
    }
}
