namespace FlexGen.Actors.Tests;

using FlexGen.Actors.Benchmark;
using FlexGen.Actors.Tests.Support;

[Collection(TimingCollection.Name)]
public class PipelineBenchmarkTests
{
    [Fact]
    public async Task Benchmark_should_run_both_modes_and_report_throughput_tiers_and_efficiency()
    {
        var offload = Fixtures.NewOffloadDir();
        var trace = Path.Combine(offload, "bench.trace.json");
        try
        {
            var options = new PipelineBenchmarkOptions
            {
                HiddenSize = 64, Heads = 4, Blocks = 2, VocabSize = 256, GpuBatchSize = 2, GenLen = 3,
                OffloadDirectory = offload, TracePath = trace,
            };
            using var output = new StringWriter();
            var result = await PipelineBenchmark.RunAsync(options, output);

            Assert.False(result.Off.Overlap);
            Assert.True(result.On.Overlap);
            Assert.Equal(2 * 2 * 3, result.On.Tokens);
            Assert.All(new[] { result.Off, result.On }, run =>
            {
                Assert.True(run.TokensPerSecond > 0);
                Assert.True(run.Summary.ScheduleEfficiency >= 1.0);
                Assert.NotNull(run.Summary.Of(FlexGen.Actors.Schedule.PipelineActorKind.DiskIo));
            });
            var text = output.ToString();
            Assert.Contains("overlap off:", text);
            Assert.Contains("overlap on:", text);
            Assert.Contains("speedup overlap on / off", text);
            Assert.True(File.Exists(trace));
            Assert.True(File.Exists(Path.ChangeExtension(trace, null) + ".overlap-off.json"));
        }
        finally
        {
            Directory.Delete(offload, recursive: true);
        }
    }
}
