namespace FlexGen.Actors.Tracing;

using System.Text.Json;
using FlexGen.Actors.Schedule;

/// <summary>
/// Chrome trace-event format (JSON object form): one complete event ("ph":"X") per task part, one process (pid) per
/// node (one, "flexgen", on a single node), one thread (tid) per tier named by a thread_name metadata event, times in
/// microseconds.
/// </summary>
public static class ChromeTraceWriter
{
    public static void Write(ExecutionTrace trace, Stream stream)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false });
        json.WriteStartObject();
        json.WriteString("displayTimeUnit", "ms");
        json.WriteStartArray("traceEvents");

        var processIds = new Dictionary<string, int>();
        foreach (var node in trace.Nodes.DefaultIfEmpty(null))
        {
            int processId = processIds.Count + 1;
            processIds[node ?? string.Empty] = processId;
            json.WriteStartObject();
            json.WriteString("name", "process_name");
            json.WriteString("ph", "M");
            json.WriteNumber("pid", processId);
            json.WriteStartObject("args");
            json.WriteString("name", node ?? "flexgen");
            json.WriteEndObject();
            json.WriteEndObject();

            foreach (var tier in Enum.GetValues<PipelineActorKind>())
            {
                json.WriteStartObject();
                json.WriteString("name", "thread_name");
                json.WriteString("ph", "M");
                json.WriteNumber("pid", processId);
                json.WriteNumber("tid", (int)tier + 1);
                json.WriteStartObject("args");
                json.WriteString("name", tier.ActorName());
                json.WriteEndObject();
                json.WriteEndObject();
            }
        }

        foreach (var e in trace.Events)
        {
            json.WriteStartObject();
            json.WriteString("name", $"{e.Task.Kind} ({e.Task.Token},{e.Task.Layer},{e.Task.Batch})");
            json.WriteString("cat", e.Task.Kind.ToString());
            json.WriteString("ph", "X");
            json.WriteNumber("pid", processIds[e.Node ?? string.Empty]);
            json.WriteNumber("tid", (int)e.Tier + 1);
            json.WriteNumber("ts", Math.Round(e.Start.TotalMicroseconds, 3));
            json.WriteNumber("dur", Math.Round(e.Duration.TotalMicroseconds, 3));
            json.WriteStartObject("args");
            json.WriteString("actor", e.Actor);
            json.WriteString("kind", e.Task.Kind.ToString());
            json.WriteNumber("i", e.Task.Token);
            json.WriteNumber("j", e.Task.Layer);
            json.WriteNumber("k", e.Task.Batch);
            json.WriteNumber("bytes", e.Bytes);
            json.WriteEndObject();
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteEndObject();
    }
}
