namespace FlexGen.Actors.Messages;

using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

/// <summary>
/// Writes an exception (a <see cref="TaskFailed"/> cause, a failure reply) as its type, message and inner exception, and
/// reads it back as that type where it has a (message) or (message, inner) constructor, else as <see cref="Exception"/>
/// naming the type. Akka's JSON serializer cannot read exceptions back through their ISerializable constructors.
/// Registered for Akka in hocon/flexgen.conf (akka.actor.serialization-settings.json.converters).
/// </summary>
public sealed class ExceptionJsonConverter : JsonConverter<Exception>
{
    public override void WriteJson(JsonWriter writer, Exception? value, JsonSerializer serializer)
    {
        if (value is null)
        {
            writer.WriteNull();
            return;
        }

        var json = new JObject
        {
            ["Type"] = value.GetType().AssemblyQualifiedName,
            ["Message"] = value.Message,
        };
        if (value.InnerException is { } inner)
        {
            json["Inner"] = JObject.FromObject(inner, JsonSerializer.Create(new JsonSerializerSettings { Converters = { this } }));
        }

        json.WriteTo(writer);
    }

    public override Exception? ReadJson(JsonReader reader, Type objectType, Exception? existingValue, bool hasExistingValue, JsonSerializer serializer)
    {
        if (reader.TokenType == JsonToken.Null)
        {
            return null;
        }

        var json = JObject.Load(reader);
        string typeName = (string?)json["Type"] ?? typeof(Exception).FullName!;
        string message = (string?)json["Message"] ?? string.Empty;
        var inner = json["Inner"] is JObject innerJson
            ? innerJson.ToObject<Exception>(JsonSerializer.Create(new JsonSerializerSettings { Converters = { this } }))
            : null;
        var type = Type.GetType(typeName, throwOnError: false);
        if (type is not null && typeof(Exception).IsAssignableFrom(type))
        {
            if (inner is not null && type.GetConstructor([typeof(string), typeof(Exception)]) is { } withInner)
            {
                return (Exception)withInner.Invoke([message, inner]);
            }

            if (type.GetConstructor([typeof(string)]) is { } withMessage)
            {
                return (Exception)withMessage.Invoke([message]);
            }
        }

        return new Exception($"{typeName}: {message}", inner);
    }
}
