namespace FlexGen.Host.Serving;

using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using FlexGen.Host.Generation;

/// <summary>
/// The server's metrics, published on the <see cref="System.Diagnostics.Metrics.Meter"/> "FlexGen.Serve" (for
/// OpenTelemetry or dotnet-counters) and written in Prometheus' text format for <c>GET /metrics</c>.
/// </summary>
public sealed class ServerMetrics : IDisposable
{
    public const string MeterName = "FlexGen.Serve";

    /// <summary>Upper bounds (seconds) of the block-duration histogram's buckets.</summary>
    public static readonly double[] DurationBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

    private readonly Meter _meter = new(MeterName);
    private readonly Counter<long> _requests;
    private readonly Counter<long> _promptTokens;
    private readonly Counter<long> _completionTokens;
    private readonly Counter<long> _generatedTokens;
    private readonly Counter<long> _blocks;
    private readonly Counter<long> _bytes;
    private readonly Histogram<double> _blockDuration;
    private readonly ConcurrentDictionary<(string Endpoint, int Status), long> _requestCounts = new();
    private readonly ConcurrentDictionary<string, long> _bytesByTier = new();
    private readonly long[] _bucketCounts = new long[DurationBuckets.Length];
    private readonly Lock _lock = new();
    private long _promptTokenCount, _completionTokenCount, _generatedTokenCount, _blockCount, _failedBlockCount, _blockSequences;
    private double _blockSeconds;
    private readonly Func<long> _queue;
    private readonly Func<bool> _ready;

    /// <param name="queue">Sequences accepted and not yet answered (waiting or running).</param>
    /// <param name="ready">Whether the server takes requests.</param>
    public ServerMetrics(Func<long> queue, Func<bool> ready)
    {
        _queue = queue;
        _ready = ready;
        _requests = _meter.CreateCounter<long>("flexgen.requests", "{request}", "HTTP requests answered, by endpoint and status.");
        _promptTokens = _meter.CreateCounter<long>("flexgen.prompt_tokens", "{token}", "Prompt tokens of accepted completions.");
        _completionTokens = _meter.CreateCounter<long>("flexgen.completion_tokens", "{token}", "Tokens returned in completions (after stop strings).");
        _generatedTokens = _meter.CreateCounter<long>("flexgen.tokens_generated", "{token}", "Tokens the engine generated (sequences x gen_len of each block).");
        _blocks = _meter.CreateCounter<long>("flexgen.blocks", "{block}", "Blocks run.");
        _bytes = _meter.CreateCounter<long>("flexgen.bytes_moved", "By", "Bytes each tier actor moved or computed on, as traced.");
        _blockDuration = _meter.CreateHistogram<double>("flexgen.block.duration", "s", "Wall time of a block, from hand-over to the coordinator to its end.");
        _meter.CreateObservableGauge("flexgen.queue_length", () => _queue(), "{sequence}", "Sequences waiting or running.");
    }

    public void RequestAnswered(string endpoint, int status)
    {
        _requestCounts.AddOrUpdate((endpoint, status), 1, (_, n) => n + 1);
        _requests.Add(1, new KeyValuePair<string, object?>("endpoint", endpoint), new KeyValuePair<string, object?>("status", status));
    }

    public void Completed(long promptTokens, long completionTokens)
    {
        Interlocked.Add(ref _promptTokenCount, promptTokens);
        Interlocked.Add(ref _completionTokenCount, completionTokens);
        _promptTokens.Add(promptTokens);
        _completionTokens.Add(completionTokens);
    }

    /// <summary>Blocks run so far (failed ones included).</summary>
    public long Blocks => Interlocked.Read(ref _blockCount);

    public void OnBlock(BlockReport block)
    {
        double seconds = block.Elapsed.TotalSeconds;
        long generated = block.Statistics is { } s ? (long)block.Sequences * s.GenLen : 0;
        lock (_lock)
        {
            _blockCount++;
            if (block.Failure is not null) _failedBlockCount++;
            _blockSequences += block.Sequences;
            _blockSeconds += seconds;
            for (int i = 0; i < DurationBuckets.Length; i++)
                if (seconds <= DurationBuckets[i]) _bucketCounts[i]++;
            _generatedTokenCount += generated;
        }
        _blocks.Add(1);
        _generatedTokens.Add(generated);
        _blockDuration.Record(seconds);
        if (block.Timeline is { } timeline)
        {
            foreach (var (tier, bytes) in timeline.BytesByTier)
            {
                _bytesByTier.AddOrUpdate(tier, bytes, (_, n) => n + bytes);
                _bytes.Add(bytes, new KeyValuePair<string, object?>("tier", tier));
            }
        }
    }

    /// <summary>Prometheus text exposition format 0.0.4.</summary>
    public string ToPrometheus()
    {
        var text = new StringBuilder();
        void Header(string name, string type, string help)
        {
            text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        }
        void Sample(string name, string labels, double value) =>
            text.Append(name).Append(labels.Length > 0 ? "{" + labels + "}" : "").Append(' ').Append(Number(value)).Append('\n');

        Header("flexgen_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
        foreach (var ((endpoint, status), n) in _requestCounts.OrderBy(kv => kv.Key.Endpoint, StringComparer.Ordinal).ThenBy(kv => kv.Key.Status))
            Sample("flexgen_requests_total", $"endpoint=\"{endpoint}\",status=\"{status}\"", n);
        Header("flexgen_prompt_tokens_total", "counter", "Prompt tokens of accepted completions.");
        Sample("flexgen_prompt_tokens_total", "", Interlocked.Read(ref _promptTokenCount));
        Header("flexgen_completion_tokens_total", "counter", "Tokens returned in completions (after stop strings and stop tokens).");
        Sample("flexgen_completion_tokens_total", "", Interlocked.Read(ref _completionTokenCount));
        Header("flexgen_queue_length", "gauge", "Sequences accepted and not yet answered (waiting or running).");
        Sample("flexgen_queue_length", "", _queue());
        Header("flexgen_ready", "gauge", "1 once the weights are placed and requests are taken; 0 while starting or draining.");
        Sample("flexgen_ready", "", _ready() ? 1 : 0);
        Header("flexgen_bytes_moved_total", "counter", "Bytes each tier actor (disk-io, copy, gpu-compute, cpu-compute) moved or computed on, as traced.");
        foreach (var (tier, bytes) in _bytesByTier.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            Sample("flexgen_bytes_moved_total", $"tier=\"{tier}\"", bytes);
        lock (_lock)
        {
            Header("flexgen_tokens_generated_total", "counter", "Tokens the engine generated (sequences x gen_len of each block).");
            Sample("flexgen_tokens_generated_total", "", _generatedTokenCount);
            Header("flexgen_blocks_total", "counter", "Blocks run (packed concurrent requests).");
            Sample("flexgen_blocks_total", "", _blockCount);
            Header("flexgen_blocks_failed_total", "counter", "Blocks that failed.");
            Sample("flexgen_blocks_failed_total", "", _failedBlockCount);
            Header("flexgen_block_sequences_total", "counter", "Sequences in the blocks run (divide by flexgen_blocks_total for the mean block fill).");
            Sample("flexgen_block_sequences_total", "", _blockSequences);
            Header("flexgen_block_duration_seconds", "histogram", "Wall time of a block, from hand-over to the coordinator to its end.");
            for (int i = 0; i < DurationBuckets.Length; i++)
                Sample("flexgen_block_duration_seconds_bucket", $"le=\"{Number(DurationBuckets[i])}\"", _bucketCounts[i]);
            Sample("flexgen_block_duration_seconds_bucket", "le=\"+Inf\"", _blockCount);
            Sample("flexgen_block_duration_seconds_sum", "", _blockSeconds);
            Sample("flexgen_block_duration_seconds_count", "", _blockCount);
        }
        return text.ToString();
    }

    private static string Number(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    public void Dispose() => _meter.Dispose();
}
