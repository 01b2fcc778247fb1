namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Benchmark;
using FlexGen.Actors.Tests.Support;

[Collection(TimingCollection.Name)]
public class PipelineBenchmarkTests
{
    [Fact]
    public async Task Benchmark_should_run_both_modes_in_turns_and_report_throughput_tiers_balance_and_efficiency()
    {
        var offload = Fixtures.NewOffloadDir();
        var trace = Path.Combine(offload, "bench.trace.json");
        try
        {
            var options = new PipelineBenchmarkOptions
            {
                HiddenSize = 64, Heads = 4, Blocks = 2, VocabSize = 256, GpuBatchSize = 2, GenLen = 3, Repeats = 2,
                OffloadDirectory = offload, TracePath = trace,
            };
            using var output = new StringWriter();
            var result = await PipelineBenchmark.RunAsync(options, output);

            Assert.False(result.Off.Overlap);
            Assert.True(result.On.Overlap);
            Assert.Equal(2 * 2 * 3 * 2, result.On.Tokens); // rows x gen x repeats
            Assert.Equal(2 * 2 * 3 * 2, result.Off.Tokens);
            Assert.All(new[] { result.Off, result.On }, run =>
            {
                Assert.True(run.TokensPerSecond > 0);
                Assert.True(run.Summary.ScheduleEfficiency >= 1.0);
                Assert.NotNull(run.Summary.Of(FlexGen.Actors.Schedule.PipelineActorKind.DiskIo));
                Assert.True(run.ComputeBusy > TimeSpan.Zero);
                Assert.True(run.DiskBusy > TimeSpan.Zero);
            });
            Assert.Equal(result.Off.DiskBusy / result.Off.ComputeBusy, result.DiskOverCompute);
            Assert.Equal(result.Off.Summary.ScheduleEfficiency, result.OverlapBound);
            var text = output.ToString();
            // Turns: off first, then on first.
            Assert.True(text.IndexOf("overlap off #1:", StringComparison.Ordinal) < text.IndexOf("overlap on #1:", StringComparison.Ordinal));
            Assert.True(text.IndexOf("overlap on #2:", StringComparison.Ordinal) < text.IndexOf("overlap off #2:", StringComparison.Ordinal));
            Assert.Contains("overlap off, 2 request(s):", text);
            Assert.Contains("overlap on, 2 request(s):", text);
            Assert.Contains("balance with overlap off: compute busy", text);
            Assert.Contains("perfect overlap: at most", text);
            Assert.Contains("with overlap on: compute busy", text);
            Assert.Contains("speedup overlap on / off", text);
            Assert.True(File.Exists(trace));
            Assert.True(File.Exists(Path.ChangeExtension(trace, null) + ".overlap-off.json"));
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }

    [Theory]
    [InlineData(2.0, "disk-bound")]
    [InlineData(1.1, "balanced")]
    [InlineData(0.9, "balanced")]
    [InlineData(0.5, "compute-bound")]
    public void Balance_advice_should_name_the_bound_side_and_the_batch_as_the_knob(double diskOverCompute, string expected)
    {
        var advice = PipelineBenchmark.BalanceAdvice(diskOverCompute);

        Assert.StartsWith(expected, advice);
        if (expected != "balanced") Assert.Contains("--gpu-batch-size", advice);
    }

    [Fact]
    public void Defaults_should_stream_every_weight_from_disk_in_the_compute_dtype_with_a_batch_of_compute_to_hide_it()
    {
        var defaults = new PipelineBenchmarkOptions();

        Assert.Equal(100, defaults.WeightsOnDiskPercent);
        Assert.True(defaults.DirectIo);
        // bfloat16: the disk holds the weights in the compute dtype, so a read widens nothing on the I/O threads.
        Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, defaults.Compute.Dtype);
        Assert.Equal(64, defaults.GpuBatchSize);
        Assert.True(defaults.Repeats >= 2);
    }
}
