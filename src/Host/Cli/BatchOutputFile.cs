namespace FlexGen.Host.Cli;

using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

/// <summary>One finished prompt: an output line <c>{"id": ..., "token_ids": [...], "text": ...}</c>.</summary>
public sealed record BatchResult(string Id, IReadOnlyList<long> TokenIds, string Text);

/// <summary>
/// <c>--output</c> of a batch job: JSON Lines, one <see cref="BatchResult"/> per finished prompt, in completion order.
/// Others may read it while a job runs (one job per output file at a time). On open, the ids already present are
/// read (a rerun skips them) and a trailing partial line (no newline: a writer killed mid-line) is truncated away.
/// <see cref="Append"/> writes whole lines with one write call and then fsyncs, so a kill never leaves half a line of ours.
/// </summary>
public sealed class BatchOutputFile : IDisposable
{
    public const string Flag = "--output";

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly FileStream _stream;
    private readonly HashSet<string> _done;

    private BatchOutputFile(string fullPath, FileStream stream, HashSet<string> done, long truncatedBytes)
    {
        FullPath = fullPath;
        _stream = stream;
        _done = done;
        TruncatedBytes = truncatedBytes;
    }

    public string FullPath { get; }

    /// <summary>Ids of the lines already in the file (complete lines only).</summary>
    public IReadOnlySet<string> DoneIds => _done;

    /// <summary>Bytes of a partial last line removed on open (0: none).</summary>
    public long TruncatedBytes { get; }

    /// <summary>
    /// Opens (or creates, with its folder) the output file, reads the ids it holds and removes a partial last line. A
    /// complete line that is not a result line is a <see cref="UsageException"/> (the file is left as it is); a file that
    /// cannot be opened or written is an <see cref="OutputFileException"/>.
    /// </summary>
    public static BatchOutputFile Open(string path)
    {
        FileStream? stream = null;
        string full = GenerationFlags.WriteFile(Flag, path, p =>
            stream = new FileStream(p, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0));
        try
        {
            var bytes = new byte[stream!.Length];
            stream.ReadExactly(bytes);
            int end = Array.LastIndexOf(bytes, (byte)'\n') + 1; // the complete lines end here
            var done = new HashSet<string>(StringComparer.Ordinal);
            int line = 0;
            for (int start = 0; start < end;)
            {
                int newline = Array.IndexOf(bytes, (byte)'\n', start);
                line++;
                var text = bytes.AsSpan(start, newline - start);
                start = newline + 1;
                if (text.Trim((byte)'\r').IsEmpty) continue;
                if (IdOf(text) is not { } id)
                    throw new UsageException(
                        $"{Flag} {path}: line {line} is not a result line ({{\"id\": \"...\", \"token_ids\": [...], \"text\": \"...\"}}); not a batch output file? Left as it is.");
                done.Add(id);
            }
            long truncated = bytes.Length - end;
            if (truncated > 0)
            {
                stream.SetLength(end);
                stream.Flush(flushToDisk: true);
            }
            stream.Seek(0, SeekOrigin.End);
            return new BatchOutputFile(full, stream, done, truncated);
        }
        catch
        {
            stream?.Dispose();
            throw;
        }
    }

    private static string? IdOf(ReadOnlySpan<byte> line)
    {
        try
        {
            using var document = JsonDocument.Parse(line.ToArray());
            return document.RootElement.ValueKind == JsonValueKind.Object
                   && document.RootElement.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String
                ? id.GetString()
                : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>One result as its line (no newline): <c>{"id":"...","token_ids":[...],"text":"..."}</c>.</summary>
    public static string Line(BatchResult result)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            writer.WriteString("id", result.Id);
            writer.WriteStartArray("token_ids");
            foreach (long id in result.TokenIds) writer.WriteNumberValue(id);
            writer.WriteEndArray();
            writer.WriteString("text", result.Text);
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Appends the lines of <paramref name="results"/> with one write call, then fsyncs.</summary>
    public void Append(IReadOnlyCollection<BatchResult> results)
    {
        if (results.Count == 0) return;
        var text = new StringBuilder();
        foreach (var result in results) text.Append(Line(result)).Append('\n');
        byte[] bytes = Encoding.UTF8.GetBytes(text.ToString());
        try
        {
            _stream.Write(bytes); // unbuffered: one write at the end of the file
            _stream.Flush(flushToDisk: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OutputFileException($"{Flag} {FullPath}: cannot write: {ex.Message.TrimEnd('.')}", ex);
        }
        foreach (var result in results) _done.Add(result.Id);
    }

    public void Dispose() => _stream.Dispose();
}
