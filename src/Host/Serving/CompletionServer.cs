namespace FlexGen.Host.Serving;

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using FlexGen.Host.Generation;
using FlexGen.Host.Text;
using FlexGen.Tensors.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

/// <summary>Where and how <see cref="CompletionServer"/> listens.</summary>
public sealed record ServeOptions
{
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>0: a free port (see <see cref="CompletionServer.Address"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>Sequences (prompts) accepted and not yet answered, at most; a request past it gets 429.</summary>
    public int MaxQueue { get; init; } = 256;
}

/// <summary>
/// OpenAI's completions API over the generation service (ASP.NET Core minimal APIs): <c>POST /v1/completions</c>,
/// <c>GET /v1/models</c>, <c>GET /health</c>, <c>GET /metrics</c>. Listens from the start; answers 503 until
/// <see cref="MarkReady"/> (the weights placed) and again once <see cref="DrainAsync"/> began. Every prompt of every
/// request goes to the service, which packs concurrent ones into blocks.
/// </summary>
public sealed partial class CompletionServer : IAsyncDisposable
{
    private enum State { Starting, Ready, Draining }

    private readonly WebApplication _app;
    private readonly ModelConfig _model;
    private readonly BpeTokenizer? _tokenizer;
    private readonly ServeOptions _options;
    private readonly string[] _modelIds;
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private GenerationService? _service;
    private State _state = State.Starting;
    private long _queued;
    private int _disposed;

    private CompletionServer(WebApplication app, ModelConfig model, BpeTokenizer? tokenizer, ServeOptions options, IEnumerable<string> modelIds)
    {
        _app = app;
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        _modelIds = modelIds.Prepend(model.Name).Where(n => !string.IsNullOrEmpty(n)).Distinct().ToArray();
        Metrics = new ServerMetrics(() => Interlocked.Read(ref _queued), () => IsReady);
    }

    public ServerMetrics Metrics { get; }

    /// <summary>The address it listens on, e.g. http://127.0.0.1:8080 (the bound port when asked for 0).</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>The id /v1/models lists (the model's name).</summary>
    public string ModelId => _modelIds[0];

    public bool IsReady
    {
        get { lock (_gate) return _state == State.Ready; }
    }

    /// <summary>Sequences accepted and not yet answered.</summary>
    public long QueueLength => Interlocked.Read(ref _queued);

    /// <param name="modelIds">Further names a request's <c>model</c> may use (e.g. the --model value).</param>
    public static async Task<CompletionServer> StartAsync(ServeOptions options, ModelConfig model, BpeTokenizer? tokenizer,
        IEnumerable<string>? modelIds = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        builder.Services.AddRoutingCore();
        // Signals are the CLI's (CliSignals): no console lifetime beside them.
        builder.Services.AddSingleton<IHostLifetime, NoLifetime>();
        var app = builder.Build();
        var server = new CompletionServer(app, model, tokenizer, options, modelIds ?? []);
        server.Map(app);
        await app.StartAsync(cancellation).ConfigureAwait(false);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address);
        return server;
    }

    /// <summary>Takes requests from now on, through <paramref name="service"/> (whose blocks the metrics count).</summary>
    public void MarkReady(GenerationService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        service.BlockCompleted += Metrics.OnBlock;
        lock (_gate)
        {
            _service = service;
            if (_state == State.Starting) _state = State.Ready;
        }
    }

    /// <summary>
    /// Takes no new requests (503) and waits until every accepted one is answered (the running block and those queued
    /// behind it, at most --max-queue sequences), or <paramref name="abandon"/>.
    /// </summary>
    public async Task DrainAsync(CancellationToken abandon = default)
    {
        lock (_gate)
        {
            _state = State.Draining;
            if (_queued == 0) _idle.TrySetResult();
        }
        try
        {
            await _idle.Task.WaitAsync(abandon).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (abandon.IsCancellationRequested)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        lock (_gate) _state = State.Draining;
        if (_service is { } service) service.BlockCompleted -= Metrics.OnBlock;
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            try { await _app.StopAsync(stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { }
        }
        await _app.DisposeAsync().ConfigureAwait(false);
        Metrics.Dispose();
    }

    private void Map(WebApplication app)
    {
        app.MapPost("/v1/completions", CompletionsAsync);
        app.MapGet("/v1/models", (HttpContext http) => Answer(http, "/v1/models", 200, new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject
            {
                ["id"] = ModelId,
                ["object"] = "model",
                ["created"] = 0,
                ["owned_by"] = "flexgen",
                ["max_model_len"] = _model.MaxSeqLen,
            }),
        }));
        app.MapGet("/health", (HttpContext http) =>
        {
            string state;
            lock (_gate) state = _state.ToString().ToLowerInvariant();
            return Answer(http, "/health", state == "ready" ? 200 : 503, new JsonObject { ["status"] = state, ["model"] = ModelId });
        });
        app.MapGet("/metrics", async (HttpContext http) =>
        {
            Metrics.RequestAnswered("/metrics", 200);
            http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await http.Response.WriteAsync(Metrics.ToPrometheus(), http.RequestAborted).ConfigureAwait(false);
        });
        app.MapFallback((HttpContext http) => Answer(http, "other", 404,
            new ApiError(404, $"No route {http.Request.Method} {http.Request.Path}.", "invalid_request_error", null, "unknown_url").ToJson()));
    }

    private async Task Answer(HttpContext http, string endpoint, int status, JsonNode body)
    {
        Metrics.RequestAnswered(endpoint, status);
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        await http.Response.WriteAsync(body.ToJsonString(), http.RequestAborted).ConfigureAwait(false);
    }

    private Task Error(HttpContext http, ApiError error) => Answer(http, "/v1/completions", error.Status, error.ToJson());

    private async Task CompletionsAsync(HttpContext http)
    {
        const string Endpoint = "/v1/completions";
        CompletionRequest request;
        try
        {
            JsonDocument document;
            try
            {
                document = await JsonDocument.ParseAsync(http.Request.Body, default, http.RequestAborted).ConfigureAwait(false);
            }
            catch (JsonException ex)
            {
                throw ApiError.BadRequest(null, $"The body is not valid JSON: {ex.Message}", "invalid_json");
            }
            using (document) request = CompletionRequest.Parse(document.RootElement, _model, _modelIds, _tokenizer);
        }
        catch (ApiError error)
        {
            await Error(http, error).ConfigureAwait(false);
            return;
        }

        GenerationService? service = null;
        ApiError? refused = null;
        int sequences = request.Prompts.Count;
        lock (_gate)
        {
            if (_state != State.Ready || _service is null)
            {
                string what = _state == State.Starting ? "starting: the weights are being placed" : "draining: it is shutting down";
                refused = new ApiError(503, $"The server is {what}; try again later.", "service_unavailable", null, _state.ToString().ToLowerInvariant());
            }
            else if (_queued + sequences > _options.MaxQueue)
            {
                refused = new ApiError(429,
                    $"The queue is full: {_queued} sequences waiting or running, {sequences} more asked, at most {_options.MaxQueue} (--max-queue).",
                    "rate_limit_error", null, "queue_full");
            }
            else
            {
                _queued += sequences;
                service = _service;
            }
        }
        if (refused is not null || service is null)
        {
            await Error(http, refused!).ConfigureAwait(false);
            return;
        }

        try
        {
            var settings = request.Settings(_model);
            string id = "cmpl-" + Guid.NewGuid().ToString("N");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (request.Stream) await StreamAsync(http, request, service, id, created).ConfigureAwait(false);
            else
            {
                var started = request.Prompts.Select(p => service.GenerateAsync(p, settings, http.RequestAborted)).ToList();
                GeneratedSequence[] results;
                try
                {
                    results = await Task.WhenAll(started).ConfigureAwait(false);
                }
                catch (Exception ex) when (!http.RequestAborted.IsCancellationRequested)
                {
                    await Error(http, Failure(ex)).ConfigureAwait(false);
                    return;
                }
                var choices = new JsonArray();
                long completionTokens = 0;
                for (int i = 0; i < results.Length; i++)
                {
                    var choice = Choose(results[i], request, settings.StopTokenId);
                    completionTokens += choice.Ids.Count;
                    choices.Add(new JsonObject
                    {
                        ["index"] = i,
                        ["text"] = choice.Text,
                        ["token_ids"] = new JsonArray(choice.Ids.Select(t => (JsonNode)t).ToArray()),
                        ["logprobs"] = null,
                        ["finish_reason"] = choice.FinishReason,
                    });
                }
                long promptTokens = request.Prompts.Sum(p => (long)p.Count);
                Metrics.Completed(promptTokens, completionTokens);
                await Answer(http, Endpoint, 200, new JsonObject
                {
                    ["id"] = id,
                    ["object"] = "text_completion",
                    ["created"] = created,
                    ["model"] = ModelId,
                    ["choices"] = choices,
                    ["usage"] = Usage(promptTokens, completionTokens),
                }).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            Metrics.RequestAnswered(Endpoint, 499);
        }
        finally
        {
            lock (_gate)
            {
                _queued -= sequences;
                if (_queued == 0 && _state == State.Draining) _idle.TrySetResult();
            }
        }
    }

    private sealed record Choice(IReadOnlyList<long> Ids, string Text, string FinishReason);

    /// <summary>The tokens and text returned for a sequence: up to a stop token (not included), then cut at a stop string.</summary>
    private Choice Choose(GeneratedSequence result, CompletionRequest request, int? stopTokenId)
    {
        IReadOnlyList<long> ids = result.OutputIds;
        bool stopped = false;
        if (stopTokenId is { } stop && ids.ToList().IndexOf(stop) is var at and >= 0)
        {
            ids = ids.Take(at).ToArray();
            stopped = true;
        }
        if (_tokenizer is null) return new Choice(ids, "", stopped ? "stop" : "length");
        var cut = StopStrings.Apply(ids, request.Stop, i => _tokenizer.Decode(i));
        return new Choice(cut.Ids, cut.Text, stopped || cut.Stopped ? "stop" : "length");
    }

    private static JsonObject Usage(long prompt, long completion) => new()
    {
        ["prompt_tokens"] = prompt,
        ["completion_tokens"] = completion,
        ["total_tokens"] = prompt + completion,
    };

    private static ApiError Failure(Exception ex) => ex switch
    {
        ObjectDisposedException => new ApiError(503, "The server is draining: it is shutting down; try again later.", "service_unavailable", null, "draining"),
        ArgumentException a => new ApiError(400, a.Message, "invalid_request_error", "prompt", "invalid_value"),
        _ => new ApiError(500, $"Generation failed: {ex.Message}", "server_error", null, null),
    };

    private sealed class NoLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
