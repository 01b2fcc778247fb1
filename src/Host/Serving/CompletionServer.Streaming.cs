namespace FlexGen.Host.Serving;

using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using FlexGen.Host.Generation;
using Microsoft.AspNetCore.Http;

/// <summary>Streamed completions: one server-sent event per token as the block produces it.</summary>
public sealed partial class CompletionServer
{
    /// <summary>
    /// Server-sent events, as the engine produces the tokens: per prompt, one chunk per token (interleaved across the
    /// prompts of the request), then one with the finish reason (with any text held back); a usage chunk when asked; then
    /// <c>[DONE]</c>. A stop token ends a prompt's stream at once (not sent); text that could begin a stop string is held
    /// back until the next tokens tell, and the token that completes one ends the stream (<see cref="StreamingText"/>).
    /// </summary>
    private async Task StreamAsync(HttpContext http, CompletionRequest request, GenerationService service, string id, long created)
    {
        var settings = request.Settings(_model);
        var events = Channel.CreateUnbounded<StreamEvent>(new UnboundedChannelOptions { SingleReader = true });
        var started = new List<Task<GeneratedSequence>>(request.Prompts.Count);
        for (int i = 0; i < request.Prompts.Count; i++)
        {
            int index = i;
            Task<GeneratedSequence> task;
            try
            {
                task = service.GenerateAsync(request.Prompts[i], settings, new TokenSink(events.Writer, index), http.RequestAborted);
            }
            catch (Exception ex) when (ex is ArgumentException or ObjectDisposedException)
            {
                task = Task.FromException<GeneratedSequence>(ex);
            }
            started.Add(task);
            // Every token is reported before the task completes: the end comes after them.
            _ = task.ContinueWith(t => events.Writer.TryWrite(new StreamEvent(index, 0, t)), TaskScheduler.Default);
        }

        var response = http.Response;
        response.StatusCode = 200;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        Metrics.RequestAnswered("/v1/completions", 200);
        await response.StartAsync(http.RequestAborted).ConfigureAwait(false);

        async Task Send(JsonNode data)
        {
            await response.WriteAsync("data: " + data.ToJsonString() + "\n\n", http.RequestAborted).ConfigureAwait(false);
            await response.Body.FlushAsync(http.RequestAborted).ConfigureAwait(false);
        }

        JsonObject Chunk(int index, string text, JsonArray tokenIds, string? finish) => new()
        {
            ["id"] = id,
            ["object"] = "text_completion",
            ["created"] = created,
            ["model"] = ModelId,
            ["choices"] = new JsonArray(new JsonObject
            {
                ["index"] = index,
                ["text"] = text,
                ["token_ids"] = tokenIds,
                ["logprobs"] = null,
                ["finish_reason"] = finish,
            }),
        };

        Func<IReadOnlyList<long>, string>? decode = _tokenizer is null ? null : ids => _tokenizer.Decode(ids);
        var texts = started.Select(_ => new StreamingText(request.Stop, settings.StopTokenId, decode)).ToArray();
        var finished = new bool[started.Count];
        long completionTokens = 0;
        async Task Finish(int index)
        {
            finished[index] = true;
            var text = texts[index];
            string rest = text.End();
            completionTokens += text.Ids.Count;
            await Send(Chunk(index, rest, new JsonArray(), text.FinishReason)).ConfigureAwait(false);
        }

        int running = started.Count;
        await foreach (var e in events.Reader.ReadAllAsync(http.RequestAborted).ConfigureAwait(false))
        {
            if (e.Done is { } done)
            {
                if (!finished[e.Index])
                {
                    if (done.IsCompletedSuccessfully) await Finish(e.Index).ConfigureAwait(false);
                    else if (!http.RequestAborted.IsCancellationRequested)
                    {
                        finished[e.Index] = true;
                        await Send(Failure(done.Exception?.GetBaseException() ?? new OperationCanceledException()).ToJson()).ConfigureAwait(false);
                    }
                }
                if (--running == 0) break;
                continue;
            }
            if (finished[e.Index]) continue;
            string? piece = texts[e.Index].Add(e.Token);
            if (piece is not null) await Send(Chunk(e.Index, piece, new JsonArray(JsonValue.Create(e.Token)), null)).ConfigureAwait(false);
            if (texts[e.Index].FinishReason is not null) await Finish(e.Index).ConfigureAwait(false);
        }
        http.RequestAborted.ThrowIfCancellationRequested();

        long promptTokens = request.Prompts.Sum(p => (long)p.Count);
        Metrics.Completed(promptTokens, completionTokens);
        if (request.IncludeUsage)
        {
            await Send(new JsonObject
            {
                ["id"] = id,
                ["object"] = "text_completion",
                ["created"] = created,
                ["model"] = ModelId,
                ["choices"] = new JsonArray(),
                ["usage"] = Usage(promptTokens, completionTokens),
            }).ConfigureAwait(false);
        }
        await response.WriteAsync("data: [DONE]\n\n", http.RequestAborted).ConfigureAwait(false);
        await response.Body.FlushAsync(http.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>A token of prompt <see cref="Index"/>, or (<see cref="Done"/> set) its end.</summary>
    private sealed record StreamEvent(int Index, long Token, Task<GeneratedSequence>? Done = null);

    private sealed class TokenSink(ChannelWriter<StreamEvent> events, int index) : IProgress<GeneratedToken>
    {
        public void Report(GeneratedToken value) => events.TryWrite(new StreamEvent(index, value.Id));
    }
}
