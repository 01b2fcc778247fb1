namespace FlexGen.Actors.Tests.Support;

using Akka.Actor;
using Akka.Cluster;
using Akka.Configuration;
using FlexGen.Actors.Engine;
using FlexGen.Actors.Hosting;
using FlexGen.Actors.Messages;
using FlexGen.Actors.Stages;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Policies;

/// <summary>
/// Several cluster nodes on loopback in one process, each an ActorSystem with a free port, a stage actor under its own
/// policy and its own offload folder; the first node coordinates (it forms the cluster and is the first stage).
/// </summary>
public sealed class StageNodes : IAsyncDisposable
{
    private readonly List<ActorSystem> _systems = new();

    private StageNodes(string model)
    {
        Model = model;
    }

    public string Model { get; }

    public IReadOnlyList<ActorSystem> Systems => _systems;

    public List<string> OffloadDirs { get; } = new();

    public IActorRef Coordinator { get; private set; } = ActorRefs.Nobody;

    /// <summary>Starts one node per policy (the first coordinates) and waits until every node is up.</summary>
    public static async Task<StageNodes> StartAsync(string model, IReadOnlyList<Policy> policies, int maxPromptLen, int maxGenLen, TimeSpan? stageWait = null)
    {
        var nodes = new StageNodes(model);
        try
        {
            var seed = nodes.StartNode(policies[0], seed: null);
            nodes.Coordinator = nodes._systems[0].ActorOf(PipelineCoordinator.Props(
                new StagePipelineSettings(policies.Count, stageWait ?? TimeSpan.FromSeconds(60), new StageModel(model, null), ModelFamilies.FromConfigFile(model), maxPromptLen, maxGenLen),
                nodes._systems[0].ActorSelection("/user/" + StageActor.Name).ResolveOne(TimeSpan.FromSeconds(10)).Result), "flexgen-pipeline");
            foreach (var policy in policies.Skip(1))
            {
                nodes.StartNode(policy, seed);
            }

            await nodes.WaitUntilUpAsync(policies.Count);
            return nodes;
        }
        catch
        {
            await nodes.DisposeAsync();
            throw;
        }
    }

    /// <summary>Starts a node that joins <paramref name="seed"/> (null: forms the cluster itself); returns its address.</summary>
    public Address StartNode(Policy policy, Address? seed)
    {
        var config = ConfigurationFactory.ParseString($$"""
            akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
            akka.cluster.roles = ["{{StagePipelineSettings.StageRole}}"]
            akka.loglevel = WARNING
            """).WithFallback(FlexGenHocon.ClusterConfig).WithFallback(FlexGenHocon.Config);
        var system = ActorSystem.Create("flexgen", config);
        _systems.Add(system);
        var offload = Fixtures.NewOffloadDir();
        OffloadDirs.Add(offload);
        system.ActorOf(StageActor.Props(policy, capacityBytes: null, (load, stagePolicy, cancellation) => TorchPipelineBackend.Create(
            new EngineSettings { ModelPath = load.Model.Model, Policy = stagePolicy, OffloadDirectory = offload, Stage = load.Layers }, stagePolicy,
            cancellationToken: cancellation)), StageActor.Name);
        var cluster = Cluster.Get(system);
        cluster.Join(seed ?? cluster.SelfAddress);
        return cluster.SelfAddress;
    }

    /// <summary>Waits (bounded) until the coordinating node sees <paramref name="count"/> stage nodes up.</summary>
    public async Task WaitUntilUpAsync(int count)
    {
        var cluster = Cluster.Get(_systems[0]);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (cluster.State.Members.Count(m => m.Status == MemberStatus.Up) < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{count} nodes were not up within 60 s: {string.Join(", ", cluster.State.Members)}");
            }

            await Task.Delay(100);
        }
    }

    public Task<PipelinePlan> FormAsync() => Coordinator.Ask<PipelinePlan>(FormPipeline.Instance, TimeSpan.FromMinutes(3));

    /// <summary>Files left under a node's offload folder (backends delete their subfolders when disposed).</summary>
    public IReadOnlyList<string> OffloadFiles(int node) => Directory.EnumerateFileSystemEntries(OffloadDirs[node], "*", SearchOption.AllDirectories).ToList();

    public async ValueTask DisposeAsync()
    {
        await Task.WhenAll(_systems.Select(s => s.Terminate()));
    }
}
