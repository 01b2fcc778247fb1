namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;

/// <summary>Runs the flexgen CLI in-process with captured output.</summary>
public static class CliRunner
{
    public sealed record CliResult(int ExitCode, string Output, string Error)
    {
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Output}\n--- stderr\n{Error}";
    }

    public static async Task<CliResult> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = await FlexGenCli.RunAsync(args, output, error);
        return new CliResult(code, output.ToString(), error.ToString());
    }
}

/// <summary>A temporary folder deleted at dispose.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "flexgen-host-tests-" + Guid.NewGuid().ToString("N"));

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}

public static class TestPaths
{
    public static string BundledModel => Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny");

    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "opt-tiny", name);
}
