namespace FlexGen.Host.Tests;

using System.Diagnostics;
using System.Net;
using FlexGen.Host.Cli;
using FlexGen.Tensors.Diagnostics;
using Xunit.Abstractions;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SoakCollection
{
    public const string Name = "soak (alone: process memory and live tensors are process-wide)";
}

/// <summary>
/// `flexgen serve` on the bundled model under continuous load (loopback, mixed settings, streaming and not, concurrent)
/// for a bounded time: after a warm-up, process memory and TorchSharp's live tensors must stay flat.
/// </summary>
[Collection(SoakCollection.Name)]
public class ServeSoakTests(ITestOutputHelper output)
{
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan Measured = TimeSpan.FromSeconds(45);
    private static readonly TimeSpan SampleEvery = TimeSpan.FromSeconds(1.5);

    private sealed record Sample(TimeSpan At, long GcHeap, long WorkingSet, long Tensors, long Requests);

    [Fact]
    public async Task Memory_and_live_tensors_should_stay_flat_under_continuous_load()
    {
        using var stop = new CancellationTokenSource();
        int port = ServeHttp.FreePort();
        var error = new StringWriter();
        var run = FlexGenCli.RunAsync(["serve", "--port", port.ToString(), "--max-wait-ms", "20"], TextWriter.Synchronized(new StringWriter()),
            TextWriter.Synchronized(error), stop.Token);
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(60) };
        await ServeHttp.WaitReadyAsync(http, run, error);

        long[][] prompts = Enumerable.Range(0, 8).Select(Fixture.UnpaddedPrompt).ToArray();
        object Body(int n) => (n % 6) switch
        {
            0 => new { prompt = prompts[n % 8], max_tokens = 8, temperature = 0 },
            1 => new { prompt = prompts[n % 8], max_tokens = 6, temperature = 0, stream = true },
            2 => (object)new { prompt = prompts.Take(3).ToArray(), max_tokens = 5, temperature = 0.8, top_k = 5, seed = n },
            3 => new { prompt = prompts[n % 8], max_tokens = 12, temperature = 1.0, top_p = 0.9, stream = true, stream_options = new { include_usage = true } },
            4 => new { prompt = prompts.Skip(2).Take(4).ToArray(), max_tokens = 4, temperature = 0, stream = true },
            _ => new { prompt = prompts[n % 8], max_tokens = 3, temperature = 0 },
        };

        long requests = 0;
        int failures = 0;
        var clock = Stopwatch.StartNew();
        var end = WarmUp + Measured;
        async Task Client(int client)
        {
            for (int n = client; clock.Elapsed < end; n += 4)
            {
                var body = Body(n);
                bool streams = body.GetType().GetProperty("stream") is not null;
                if (streams)
                {
                    var (_, chunks, _) = await ServeHttp.StreamAsync(http, body);
                    if (chunks.Count == 0) Interlocked.Increment(ref failures);
                }
                else
                {
                    var (status, _) = await ServeHttp.PostAsync(http, body);
                    if (status != HttpStatusCode.OK) Interlocked.Increment(ref failures);
                }
                Interlocked.Increment(ref requests);
            }
        }

        var clients = Enumerable.Range(0, 4).Select(c => Task.Run(() => Client(c))).ToArray();
        var samples = new List<Sample>();
        using var process = Process.GetCurrentProcess();
        while (clock.Elapsed < end)
        {
            await Task.Delay(SampleEvery);
            if (clock.Elapsed < WarmUp) continue;
            process.Refresh();
            samples.Add(new Sample(clock.Elapsed, GC.GetTotalMemory(forceFullCollection: true), process.WorkingSet64, LiveTensors.InProcess,
                Interlocked.Read(ref requests)));
        }
        await Task.WhenAll(clients);
        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(60)));

        foreach (var s in samples)
            output.WriteLine($"{s.At.TotalSeconds,6:F1} s  requests {s.Requests,5}  gc heap {s.GcHeap / 1e6,8:F1} MB  working set {s.WorkingSet / 1e6,8:F1} MB  live tensors {s.Tensors,6}");
        Assert.Equal(0, failures);
        Assert.True(samples.Count >= 12, $"{samples.Count} samples");
        long measuredRequests = samples[^1].Requests - samples[0].Requests;
        Assert.True(measuredRequests >= 20, $"only {measuredRequests} requests in the measured period");

        // The rule: the median of the last third of the samples within 25% (plus a small absolute allowance) of the
        // median of the first third. Medians, because a sample may land while a block holds its cache and buffers (up to
        // a block's worth of tensors and bytes in flight) or just before a GC; a leak per request or block grows with
        // the requests served (hundreds in the measured period: even one tensor or ~100 KB per request would break it),
        // while a steady state stays within these bounds. The allowances: 32 MB of heap, 64 MB of working set (the
        // runtime, Kestrel's pools and the JIT still settling), 64 tensors (a block's buffers in flight).
        int third = samples.Count / 3;
        static long Median(IEnumerable<long> values)
        {
            var sorted = values.Order().ToArray();
            return sorted[sorted.Length / 2];
        }
        void Flat(string what, Func<Sample, long> value, long allowance)
        {
            long early = Median(samples.Take(third).Select(value)), late = Median(samples.TakeLast(third).Select(value));
            output.WriteLine($"{what}: early median {early}, late median {late}, bound {early * 1.25 + allowance:F0}");
            Assert.True(late <= early * 1.25 + allowance, $"{what} grew: early median {early}, late median {late} over {measuredRequests} requests");
        }
        Flat("gc heap bytes", s => s.GcHeap, 32L << 20);
        Flat("working set bytes", s => s.WorkingSet, 64L << 20);
        Flat("live tensors", s => s.Tensors, 64);
    }
}
