namespace FlexGen.Host.Serving;

using System.Text.Json.Nodes;

/// <summary>
/// An OpenAI-style error: the HTTP status and <c>{"error": {"message", "type", "param", "code"}}</c>. Thrown while a
/// request is checked; the server answers it as JSON.
/// </summary>
public sealed class ApiError(int status, string message, string type, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;

    public string Type { get; } = type;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    /// <summary>400: a field is missing, of the wrong type or out of range (named by <paramref name="param"/>).</summary>
    public static ApiError BadRequest(string? param, string message, string? code = "invalid_value") =>
        new(400, message, "invalid_request_error", param, code);

    public JsonObject ToJson() => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = Message,
            ["type"] = Type,
            ["param"] = Param,
            ["code"] = Code,
        },
    };
}
