namespace FlexGen.Host.Checkpoints;

/// <summary>A safetensors file or checkpoint folder that cannot be read; the message names the file and the rule.</summary>
public sealed class SafetensorsFormatException(string path, string problem)
    : Exception($"{path}: {problem}")
{
    public string Path { get; } = path;
}
