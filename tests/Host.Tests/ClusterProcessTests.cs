namespace FlexGen.Host.Tests;

using System.Net;
using System.Net.Sockets;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>
/// A pipeline over three processes: two `flexgen worker`s and a `flexgen generate --cluster-listen` that coordinates and is
/// the first stage, each stage under its own policy. Waits are generous but bounded (a loaded machine starts processes slowly).
/// </summary>
[Collection(ClusterProcesses.Name)]
public class ClusterProcessTests
{
    private static readonly TimeSpan GenerateLimit = TimeSpan.FromMinutes(3);

    private static string LlamaTiny(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "llama-tiny", name);

    /// <summary>Weights on disk on one worker, in CPU memory on the other; the coordinating node keeps its own on the GPU tier.</summary>
    private static string[] Worker(int port, int seed, string offload, string percent) =>
        ["worker", "--listen", $"127.0.0.1:{port}", "--seed", $"127.0.0.1:{seed}", "--offload-dir", offload, "--compute-dtype", "float32",
            "--percent", .. percent.Split(' ')];

    private static string[] Generate(int seed, string outputIds, params string[] more) =>
        ["generate", "--cluster-listen", $"127.0.0.1:{seed}", "--stages", "3", "--stage-wait-s", "120", "--compute-dtype", "float32",
            "--warmup", "false", "--output-ids", outputIds, "--trace", Path.ChangeExtension(outputIds, ".trace.json"), .. more];

    [Fact]
    public async Task Two_workers_and_generate_should_give_the_single_node_tokens_of_opt_tiny_and_llama_tiny()
    {
        using var folder = new TempFolder();
        int seed = FreePort(), first = FreePort(), second = FreePort();
        using var diskWorker = FlexGenProcess.Start(Worker(first, seed, folder.File("w1"), "0 0 100 0 100 0"));
        using var cpuWorker = FlexGenProcess.Start(Worker(second, seed, folder.File("w2"), "0 100 0 100 100 0"));

        using (var opt = FlexGenProcess.Start(Generate(seed, folder.File("opt.npy"), "--gen-len", "10")))
        {
            Assert.True(await opt.WaitForExit(GenerateLimit) == 0, opt.ToString());
            Assert.Contains(opt.OutputLines, l => l.StartsWith("pipeline of 3 stages", StringComparison.Ordinal));
        }

        Assert.Equal(Ids(TestPaths.Fixture("hf_fp32_tokens.npy")), Ids(folder.File("opt.npy")));

        // The workers stay up: the next request (another model) forms a new pipeline with them.
        using (var llama = FlexGenProcess.Start(Generate(seed, folder.File("llama.npy"), "--gen-len", "10", "--model", LlamaTiny("model"),
                   "--input-ids", LlamaTiny("prompt_ids.npy"))))
        {
            Assert.True(await llama.WaitForExit(GenerateLimit) == 0, llama.ToString());
        }

        Assert.Equal(Ids(LlamaTiny("ref_fp32_tokens.npy")), Ids(folder.File("llama.npy")));
    }

    [Fact]
    public async Task Killed_worker_should_fail_the_request_naming_its_node_and_a_replacement_should_serve_the_next()
    {
        using var folder = new TempFolder();
        int seed = FreePort(), survivorPort = FreePort(), victimPort = FreePort();
        using var survivor = FlexGenProcess.Start(Worker(survivorPort, seed, folder.File("survivor"), "0 0 100 0 100 0"));
        using (var victim = FlexGenProcess.Start(Worker(victimPort, seed, folder.File("victim"), "0 100 0 100 100 0")))
        using (var generate = FlexGenProcess.Start(Generate(seed, folder.File("killed.npy"), "--gen-len", "200")))
        {
            // Mid-generation: some tokens of the first block are done.
            Assert.True(await generate.WaitForErrorLine(l => l.StartsWith("generate: ", StringComparison.Ordinal) && l.Contains(" tokens of ", StringComparison.Ordinal)
                && !l.Contains("started", StringComparison.Ordinal), GenerateLimit), generate.ToString());
            victim.Signal(9);
            var killed = System.Diagnostics.Stopwatch.StartNew();
            Assert.True(await generate.WaitForErrorLine(l => l.StartsWith("failed:", StringComparison.Ordinal), TimeSpan.FromSeconds(30)), generate.ToString());
            Assert.True(killed.Elapsed < TimeSpan.FromSeconds(15), $"failed {killed.Elapsed.TotalSeconds:F1} s after the kill\n{generate}");
            Assert.Contains(generate.ErrorLines, l => l.StartsWith("failed:", StringComparison.Ordinal)
                && l.Contains($"127.0.0.1:{victimPort}", StringComparison.Ordinal) && l.Contains("layers", StringComparison.Ordinal));
            Assert.NotEqual(0, await generate.WaitForExit(GenerateLimit));
        }

        // The survivor frees its part of the request and its layers (files included) once the request fails.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (Files(folder.File("survivor")).Count > 0 && DateTime.UtcNow < deadline) await Task.Delay(200);
        Assert.Empty(Files(folder.File("survivor")));
        Assert.False(survivor.HasExited, survivor.ToString());

        using var replacement = FlexGenProcess.Start(Worker(FreePort(), seed, folder.File("replacement"), "0 100 0 100 100 0"));
        using var next = FlexGenProcess.Start(Generate(seed, folder.File("next.npy"), "--gen-len", "10"));
        Assert.True(await next.WaitForExit(GenerateLimit) == 0, next.ToString());
        Assert.Equal(Ids(TestPaths.Fixture("hf_fp32_tokens.npy")), Ids(folder.File("next.npy")));
    }

    private static List<string> Files(string folder) =>
        Directory.Exists(folder) ? [.. Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)] : [];

    private static long[][] Ids(string path)
    {
        using var t = NpyFile.Read(path).to(torch.ScalarType.Int64);
        return t.data<long>().ToArray().Chunk((int)t.shape[1]).ToArray();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>
/// The cluster process tests run one at a time and alone: each starts several processes and times Akka's failure
/// detection; next to the rest of the suite a killed worker's request once failed to end within 30 s.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterProcesses
{
    public const string Name = "cluster processes";
}
