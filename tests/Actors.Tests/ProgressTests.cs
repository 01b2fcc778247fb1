namespace FlexGen.Actors.Tests;

using Akka.Actor;
using FlexGen.Actors.Actors;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;

public class ProgressTests : Akka.TestKit.Xunit2.TestKit
{
    public ProgressTests()
        : base(FlexGenHocon.Config, "progress")
    {
    }


    private sealed class ThrowingProgress : IProgress<GenerationProgress>
    {
        public int Calls;

        public void Report(GenerationProgress value)
        {
            Interlocked.Increment(ref Calls);
            throw new InvalidOperationException("observer broke");
        }
    }

    [Theory]
    [InlineData(1, 4, null, false)]
    [InlineData(1, 4, null, true)]
    [InlineData(2, 5, null, true)]
    [InlineData(2, 5, 3, false)]
    [InlineData(3, 1, null, true)]
    public async Task Progress_should_arrive_once_per_token_per_block_in_order_and_end_at_gen_len(int batches, int genLen, int? cut, bool overlap)
    {
        const int requestBlocks = 3;
        var policy = TestPolicies.Offloaded(batches, overlap, sep: true, cpuCacheCompute: false);
        var backend = new RecordingBackend(policy, numBlocks: 2);
        var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, _ => backend));
        var progress = new CollectingProgress();
        var request = new GenerateRequest
        {
            PromptIds = TestPolicies.Prompts(requestBlocks * 4 * batches - 1), // the last block padded
            Generation = new(genLen),
            CutGenLen = cut,
        };

        var result = await FlexGenSystem.Attach(Sys, coordinator).GenerateAsync(request, progress).WaitAsync(TimeSpan.FromSeconds(30));
        Sys.Stop(coordinator);

        int tokens = cut ?? genLen;
        var expected = Enumerable.Range(0, requestBlocks).SelectMany(b => Enumerable.Range(1, tokens).Select(t => (b, t))).ToArray();
        var reports = progress.Reports;
        Assert.Equal(expected, reports.Select(r => (r.Block, r.Token)).ToArray());
        Assert.All(reports, r =>
        {
            Assert.Equal(request.RequestId, r.RequestId);
            Assert.Equal(requestBlocks, r.Blocks);
            Assert.Equal(tokens, r.Tokens);
        });
        Assert.Equal(Enumerable.Range(1, requestBlocks * tokens), reports.Select(r => r.Done));
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First.Elapsed <= p.Second.Elapsed), "elapsed time went backwards");
        Assert.Equal(reports[^1].Total, reports[^1].Done);
        Assert.Equal(requestBlocks * 4 * batches - 1, result.OutputIds.Length);
    }

    [Fact]
    public async Task Each_token_should_be_reported_only_after_all_its_tasks_are_done()
    {
        var policy = TestPolicies.Offloaded(2, overlap: true, sep: false, cpuCacheCompute: false);
        var backend = new RecordingBackend(policy, numBlocks: 2);
        var progress = new CollectingProgress();
        int tasksOfReportedTokensStillRunning = 0;
        int reportsSeen = 0;
        backend.PartDuration = (_, _) => TimeSpan.FromMilliseconds(1); // reports are messages: give them time to arrive mid-run
        backend.OnPart = (task, _) =>
        {
            // A part of token t runs: no report may already claim token t done for this (only) block.
            var reports = progress.Reports;
            reportsSeen = reports.Count;
            if (reports.Count > 0 && reports[^1].Token > task.Token)
            {
                Interlocked.Increment(ref tasksOfReportedTokensStillRunning);
            }
        };
        var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, _ => backend));
        var request = new GenerateRequest { PromptIds = TestPolicies.Prompts(8), Generation = new(4) };

        await FlexGenSystem.Attach(Sys, coordinator).GenerateAsync(request, progress).WaitAsync(TimeSpan.FromSeconds(30));
        Sys.Stop(coordinator);

        Assert.Equal(0, tasksOfReportedTokensStillRunning);
        Assert.True(reportsSeen > 0, "no report arrived while parts were still running");
        Assert.Equal([1, 2, 3, 4], progress.Reports.Select(r => r.Token));
    }

    [Fact]
    public async Task A_throwing_progress_observer_should_not_fail_the_request()
    {
        var policy = TestPolicies.Offloaded(1, overlap: true, sep: true, cpuCacheCompute: false);
        var backend = new RecordingBackend(policy, numBlocks: 2);
        var coordinator = Sys.ActorOf(GenerationCoordinator.Props(policy, _ => backend));
        var request = new GenerateRequest
        {
            PromptIds = TestPolicies.Prompts(4),
            Generation = new(3),
        };
        var progress = new ThrowingProgress();

        var result = await FlexGenSystem.Attach(Sys, coordinator).GenerateAsync(request, progress).WaitAsync(TimeSpan.FromSeconds(30));
        Sys.Stop(coordinator);

        Assert.Equal(4, result.OutputIds.Length);
        Assert.Equal(3, progress.Calls);
    }
}
