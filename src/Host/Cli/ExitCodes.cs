namespace FlexGen.Host.Cli;

/// <summary>The CLI's exit codes.</summary>
public static class ExitCodes
{
    public const int Success = 0;
    public const int Failure = 1;
    public const int Usage = 2;

    /// <summary>Cancelled by SIGINT (Ctrl-C): 128 + 2, as shells report it.</summary>
    public const int Interrupted = 130;

    /// <summary>Cancelled by SIGTERM: 128 + 15.</summary>
    public const int Terminated = 143;
}
