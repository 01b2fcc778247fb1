namespace FlexGen.Actors.Tests.Support;

using FlexGen.Actors.Messages;

/// <summary>Collects progress reports synchronously, in order (Progress&lt;T&gt; would post them to the thread pool, out of order).</summary>
public sealed class CollectingProgress : IProgress<GenerationProgress>
{
    private readonly List<GenerationProgress> _reports = new();

    public IReadOnlyList<GenerationProgress> Reports
    {
        get
        {
            lock (_reports)
            {
                return _reports.ToArray();
            }
        }
    }

    public void Report(GenerationProgress value)
    {
        lock (_reports)
        {
            _reports.Add(value);
        }
    }
}
