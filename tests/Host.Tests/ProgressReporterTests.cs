namespace FlexGen.Host.Tests;

using FlexGen.Actors.Messages;
using FlexGen.Host.Cli;
using FlexGen.Host.Generation;
using FlexGen.Tensors.Layers;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Tiers;

/// <summary>Progress on a terminal (a writer that says it is one): the bar's line always ends before what follows.</summary>
public class ProgressReporterTests
{
    private static (CliConsole Console, StringWriter Error) Terminal()
    {
        var error = new StringWriter();
        return (new CliConsole(new StringWriter(), error, Verbose: false, Terminal: true), error);
    }

    [Fact]
    public void A_stage_that_stops_unfinished_should_end_its_bar_line_at_dispose()
    {
        var (console, error) = Terminal();
        using (var progress = console.Progress("convert", 10, "tensors"))
            progress.Report(3);

        Assert.Equal("\rconvert [#########.....................] 3/10 tensors, 30%   \n", error.ToString().Replace(Environment.NewLine, "\n"));
    }

    [Fact]
    public void A_completed_stage_or_one_that_drew_nothing_should_not_add_an_empty_line()
    {
        var (console, error) = Terminal();
        using (var progress = console.Progress("convert", 10, "tensors"))
        {
            progress.Report(10);
            progress.Complete();
        }
        using (console.Progress("idle", 10)) { }

        var text = error.ToString().Replace(Environment.NewLine, "\n");
        Assert.StartsWith("\rconvert [##############################] 10/10 tensors, 100%   \rconvert: done (10/10 tensors, 100%) in ", text);
        Assert.Equal(1, text.Count(c => c == '\n'));
        Assert.EndsWith("\n", text);
    }

    [Fact]
    public void Generation_progress_that_fails_should_end_its_bar_line()
    {
        var (console, error) = Terminal();
        using (var display = new GenerationProgressDisplay(console, "generate", rows: 8, blockSize: 4, tokens: 5))
            display.Report(new GenerationProgress(Guid.NewGuid(), Block: 0, Blocks: 2, Token: 2, Tokens: 5, TimeSpan.Zero));

        var text = error.ToString().Replace(Environment.NewLine, "\n");
        Assert.StartsWith("\rgenerate [", text);
        Assert.EndsWith("%   \n", text);
    }

    [Fact]
    public void A_weight_load_display_that_stops_unfinished_should_end_its_bar_line()
    {
        var (console, error) = Terminal();
        using (var display = new WeightLoadProgressDisplay(console, "load weights", "opt-tiny into their tiers"))
            display.Report(new WeightLoadProgress(Layer: 2, LayerCount: 8, BytesLoaded: 3 << 20, TotalBytes: 12 << 20));

        Assert.Equal("load weights: opt-tiny into their tiers ...\n\rload weights [#######.......................] layer 3/8, 3.0/12.0 MB, 25%   \n",
            error.ToString().Replace(Environment.NewLine, "\n"));
    }

    [Fact]
    public async Task A_weight_load_failure_should_be_announced_to_the_display_before_the_failure_is_reported()
    {
        using var folder = new TempFolder();
        string model = folder.File("opt-tiny");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(TestPaths.BundledModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        string broken = Path.Combine(model, "decoder.layers.2.fc1.weight");
        File.WriteAllBytes(broken, File.ReadAllBytes(broken)[..1000]);
        var (console, error) = Terminal();
        var options = new FlexGenOptions { Model = model, ComputeDtype = "float32", OffloadDir = folder.File("offload"), AkkaLogLevel = "OFF" };

        Exception? announced = null;
        await using (var runtime = await FlexGenRuntime.StartAsync(options, model: null, console, CancellationToken.None))
        {
            runtime.Setup.WeightsLoadFailed += (_, ex) => announced = ex;
            var ex = await Assert.ThrowsAnyAsync<Exception>(() =>
                runtime.Service.GenerateBatchAsync(new long[,] { { 2, 100, 200 } }, new GenerationSettings(2)));
            Assert.Contains(broken, ex.ToString());
        }

        Assert.NotNull(announced);
        Assert.Contains(broken, announced.Message);
        var text = error.ToString().Replace(Environment.NewLine, "\n");
        Assert.StartsWith("load weights: opt-tiny into their tiers ...\n", text);
        Assert.EndsWith("\n", text);
        Assert.DoesNotContain("load weights: done", text);
    }
}
