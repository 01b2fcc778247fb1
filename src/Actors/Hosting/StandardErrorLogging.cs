namespace FlexGen.Actors.Hosting;

using Akka.Actor;
using Akka.Configuration;
using Akka.Dispatch;
using Akka.Event;

/// <summary>
/// Akka's own log lines on standard error, never between a command's results on standard output: the logger actor
/// (<see cref="StandardErrorLogger"/>) and the minimal logger used before it starts and after it stops
/// (<see cref="StandardErrorMinimalLogger"/>).
/// </summary>
public static class StandardErrorLogging
{
    /// <summary>HOCON: both loggers on standard error at <paramref name="level"/> (OFF, ERROR, WARNING, INFO, DEBUG).</summary>
    public static string Hocon(string level) =>
        $"akka.loglevel = {level}\n" +
        $"akka.stdout-loglevel = {level}\n" +
        $"akka.loggers = [\"{typeof(StandardErrorLogger).FullName}, {typeof(StandardErrorLogger).Assembly.GetName().Name}\"]\n" +
        $"akka.stdout-logger-class = \"{typeof(StandardErrorMinimalLogger).FullName}, {typeof(StandardErrorMinimalLogger).Assembly.GetName().Name}\"\n";

    /// <summary>As <see cref="Hocon"/>, parsed.</summary>
    public static Config Config(string level) => ConfigurationFactory.ParseString(Hocon(level));
}

/// <summary>Akka's logger actor, writing each log event as one line to standard error.</summary>
public sealed class StandardErrorLogger : ReceiveActor, IRequiresMessageQueue<ILoggerMessageQueueSemantics>
{
    public StandardErrorLogger()
    {
        Receive<InitializeLogger>(_ => Sender.Tell(new LoggerInitialized()));
        Receive<LogEvent>(e => Console.Error.WriteLine(e.ToString()));
    }
}

/// <summary>Akka's minimal logger (start-up and shutdown), on standard error.</summary>
public sealed class StandardErrorMinimalLogger : MinimalLogger
{
    protected override void Log(object message) => Console.Error.WriteLine(message);
}
