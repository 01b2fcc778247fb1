namespace FlexGen.Actors.Actors;

using Akka.Actor;
using Akka.Event;
using FlexGen.Actors.Messages;

/// <summary>
/// A local actor that hands the <see cref="GenerationProgress"/> messages of one request to an
/// <see cref="IProgress{T}"/> (FlexGenSystem.GenerateAsync makes one per request and stops it after the reply, once
/// every report before the reply was handed over). Reports run on this actor's thread, in order; an observer that
/// throws is logged and does not fail the request.
/// </summary>
public sealed class ProgressRelay : ReceiveActor
{
    public ProgressRelay(IProgress<GenerationProgress> progress)
    {
        var log = Context.GetLogger();
        Receive<GenerationProgress>(report =>
        {
            try
            {
                progress.Report(report);
            }
            catch (Exception e)
            {
                log.Warning("the progress observer of request {0} threw: {1}", report.RequestId, e.Message);
            }
        });
    }

    public static Props Props(IProgress<GenerationProgress> progress) => Akka.Actor.Props.Create(() => new ProgressRelay(progress));
}
