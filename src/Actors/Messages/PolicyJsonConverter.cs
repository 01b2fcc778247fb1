namespace FlexGen.Actors.Messages;

using FlexGen.Tensors.Policies;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

/// <summary>
/// Writes a <see cref="Policy"/> (with its compression configs) with every property. Akka's JSON serializer leaves out
/// values equal to their type's default, and a policy's defaults are not its type's: Overlap = false would come back
/// true. Registered for Akka in hocon/flexgen.conf (akka.actor.serialization-settings.json.converters).
/// </summary>
public sealed class PolicyJsonConverter : JsonConverter<Policy>
{
    private static readonly JsonSerializer Complete = JsonSerializer.Create(new JsonSerializerSettings
    {
        DefaultValueHandling = DefaultValueHandling.Include,
        TypeNameHandling = TypeNameHandling.None,
    });

    public override void WriteJson(JsonWriter writer, Policy? value, JsonSerializer serializer)
    {
        if (value is null)
        {
            writer.WriteNull();
            return;
        }

        JObject.FromObject(value, Complete).WriteTo(writer);
    }

    public override Policy? ReadJson(JsonReader reader, Type objectType, Policy? existingValue, bool hasExistingValue, JsonSerializer serializer) =>
        reader.TokenType == JsonToken.Null ? null : JObject.Load(reader).ToObject<Policy>(Complete);
}
