namespace FlexGen.Actors.Pipeline;

using System.Collections.Concurrent;

/// <summary>
/// The runs of one coordinator by id. The tier protocol carries a <see cref="RunId"/>, never the run: the
/// coordinator registers each run it creates and removes it before disposing it; its pipeline actors (same process)
/// look the run up here. A part whose run is gone is skipped.
/// </summary>
public sealed class RunRegistry
{
    private readonly ConcurrentDictionary<RunId, IPipelineRun> _runs = new();

    public void Add(IPipelineRun run)
    {
        if (!_runs.TryAdd(run.Id, run))
        {
            throw new InvalidOperationException($"run {run.Id} is already registered");
        }
    }

    public bool TryGet(RunId id, out IPipelineRun run) => _runs.TryGetValue(id, out run!);

    public void Remove(RunId id) => _runs.TryRemove(id, out _);
}
