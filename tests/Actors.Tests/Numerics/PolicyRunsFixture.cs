namespace FlexGen.Actors.Tests.Numerics;

using System.Collections.Concurrent;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Tests.Support;
using FlexGen.Tensors.Policies;

/// <summary>
/// One actor system on a fixture model that runs the fixture prompts under each policy once (one request at a time)
/// and keeps the tokens: the class fixture of each model family's policy token tests.
/// </summary>
/// <param name="model">The converted model folder.</param>
/// <param name="systemName">The actor system's name.</param>
/// <param name="promptIds">The fixture's prompt ids, one row a sequence.</param>
/// <param name="promptMask">The fixture's attention mask (true = real token).</param>
public abstract class PolicyRunsFixture(string model, string systemName, long[][] promptIds, bool[][] promptMask) : IAsyncLifetime
{
    private readonly ConcurrentDictionary<Policy, long[][]> _tokens = new();
    private readonly SemaphoreSlim _gate = new(1, 1);
    private FlexGenSystem? _system;

    public IReadOnlyDictionary<string, Policy> Policies { get; } = Fixtures.Policies();

    public string OffloadDir { get; } = Fixtures.NewOffloadDir();

    public Task InitializeAsync()
    {
        _system = FlexGenSystem.Start(new EngineSettings { ModelPath = model, Policy = Policies["all_gpu"], OffloadDirectory = OffloadDir }, systemName);
        return Task.CompletedTask;
    }

    /// <summary>The tokens the fixture prompts give under <paramref name="policy"/>, generated the first time it is asked for.</summary>
    public async Task<long[][]> Tokens(Policy policy)
    {
        if (_tokens.TryGetValue(policy, out var cached))
        {
            return cached;
        }

        await _gate.WaitAsync();
        try
        {
            if (_tokens.TryGetValue(policy, out cached))
            {
                return cached;
            }

            var result = await _system!.GenerateAsync(new GenerateRequest
            {
                PromptIds = promptIds.ToRows(),
                AttentionMask = promptMask.ToRows(),
                Generation = new(10),
                Policy = policy,
            });
            var tokens = result.OutputIds.Select(r => r.ToArray()).ToArray();
            _tokens[policy] = tokens;
            return tokens;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async Task DisposeAsync()
    {
        if (_system is not null)
        {
            await _system.DisposeAsync();
        }

        Directory.Delete(OffloadDir, recursive: true);
    }
}
