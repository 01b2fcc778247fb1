namespace FlexGen.Host.Cli;

/// <summary>A command-line usage error: bad flag value, missing file, unknown preset. Exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);
