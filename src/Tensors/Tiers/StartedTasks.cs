namespace FlexGen.Tensors.Tiers;

/// <summary>
/// Starts several transfers and waits for all of them. When starting one throws, the ones already started are waited
/// for before the exception goes on, so no transfer is still writing into memory its caller is about to free.
/// </summary>
internal static class StartedTasks
{
    public static async Task WhenAll(IEnumerable<Func<Task>> starts)
    {
        var started = new List<Task>();
        try
        {
            foreach (var start in starts)
            {
                started.Add(start());
            }
        }
        catch
        {
            try
            {
                await Task.WhenAll(started).ConfigureAwait(false);
            }
            catch
            {
                // The first failure (the synchronous one) is the one reported.
            }

            throw;
        }

        await Task.WhenAll(started).ConfigureAwait(false);
    }

    public static Task WhenAll(params Func<Task>[] starts) => WhenAll((IEnumerable<Func<Task>>)starts);
}
