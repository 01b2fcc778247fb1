namespace FlexGen.Host.Cli;

using System.CommandLine;
using System.Diagnostics;
using FlexGen.Host.Generation;
using FlexGen.Host.Hosting;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Npy;
using TorchSharp;

/// <summary>
/// <c>flexgen generate</c>: run prompts through the model under a policy. Without arguments: the bundled model
/// on the built-in prompt set.
/// </summary>
public static class GenerateCommand
{
    /// <summary>Where the trace goes when --trace is not given.</summary>
    public const string DefaultTracePath = "flexgen.trace.json";

    /// <summary>The built-in prompt set shipped next to the binary: 8 prompts of the bundled model's fixture, int64 (8, 12).</summary>
    public static string BuiltInPromptsPath => Path.Combine(AppContext.BaseDirectory, "prompts",
        $"{Path.GetFileName(ModelResolver.BundledModelFolder)}-prompt_ids.npy");

    public const int DefaultGenLen = 10;

    public static Command Build()
    {
        var flags = new GenerationFlags(DefaultGenLen, DefaultTracePath);
        var inputIds = new Option<string?>("--input-ids")
        {
            Description = "int64 (or int32) .npy of shape (n, prompt_len), left-padded with the model's pad id.",
        };
        var outputIds = new Option<string?>("--output-ids") { Description = "Write the generated ids here: int64 .npy (n, gen_len)." };
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "A text prompt (repeatable); needs the model folder's tokenizer (vocab.json and merges.txt, tokenizer.json or tokenizer.model, as its family uses).",
            Arity = ArgumentArity.OneOrMore,
        };
        var promptsFile = new Option<string?>(PromptsFile.Flag)
        {
            Description = "A batch job: JSON Lines, one {\"id\", \"prompt\" or \"prompt_ids\", optional \"max_tokens\"} per line; results go to --output, and a rerun skips the ids already there.",
        };
        var output = new Option<string?>(BatchOutputFile.Flag)
        {
            Description = "The batch job's results (with --prompts-file): one {\"id\", \"token_ids\", \"text\"} line per prompt, appended as each block finishes.",
        };
        var doSample = new Option<bool>("--do-sample") { Description = "Sample instead of greedy decoding." };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature.", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong?>("--seed") { Description = "Sampling seed (default: random)." };
        var stop = new Option<string?>("--stop")
        {
            Description = "Stop token: an id, or text that encodes to one token (needs the tokenizer). Later positions hold the pad id. Default: none, or the model's EOS for text prompts of families that end their text with it (Llama).",
        };

        var clusterListen = new Option<string?>("--cluster-listen")
        {
            Description = "Run as the coordinating node of a pipeline over several nodes: form the cluster at this host:port (the workers' --seed), be its first stage, plan the other stages' layers, run, and leave.",
        };
        var stages = new Option<int>("--stages") { Description = "Stages of the pipeline (with --cluster-listen), this node's included.", DefaultValueFactory = _ => 2 };
        var stageWait = new Option<double>("--stage-wait-s")
        {
            Description = "How long to wait for the other stages' workers to join (with --cluster-listen).",
            DefaultValueFactory = _ => 60,
        };
        var warmup = PolicyFlags.Bool("--warmup", true, "Run one short generation first so the measured throughput excludes start-up costs");
        var command = new Command("generate", "Generate tokens for prompts; prints the ids (and text), throughput and the trace file.");
        flags.AddTo(command);
        flags.AddSamplingTo(command);
        foreach (var o in new Option[] { inputIds, outputIds, prompt, promptsFile, output, doSample, temperature, seed, stop, warmup, clusterListen, stages, stageWait }) command.Options.Add(o);

        command.SetAction(async (parse, cancellation) =>
        {
            var console = FlexGenCli.ConsoleOf(parse);
            var options = flags.ToOptions(parse);
            int genLen = flags.GetGenLen(parse);
            double temp = parse.GetValue(temperature);
            if (!double.IsFinite(temp) || temp <= 0) throw new UsageException($"--temperature {temp}: must be > 0.");
            string? inputPath = parse.GetValue(inputIds);
            string[] prompts = parse.GetValue(prompt) ?? [];
            if (inputPath is not null && prompts.Length > 0) throw new UsageException("--input-ids and --prompt cannot be used together.");
            string? outputPath = parse.GetValue(outputIds);
            string? batchPath = parse.GetValue(promptsFile), batchOutput = parse.GetValue(output);
            if (batchPath is not null && (inputPath is not null || prompts.Length > 0)) throw new UsageException("--prompts-file cannot be used with --prompt or --input-ids.");
            if (batchPath is not null && outputPath is not null) throw new UsageException("--output-ids cannot be used with --prompts-file: its results go to --output.");
            if (batchPath is not null && batchOutput is null) throw new UsageException("--prompts-file needs --output <file.jsonl>: where the results go, and what a rerun resumes from.");
            if (batchPath is null && batchOutput is not null) throw new UsageException("--output is the result file of --prompts-file; --input-ids and --prompt write --output-ids.");

            string? listen = parse.GetValue(clusterListen);
            if (listen is null && (parse.GetResult(stages) is { Implicit: false } || parse.GetResult(stageWait) is { Implicit: false }))
                throw new UsageException("--stages and --stage-wait-s need --cluster-listen.");
            if (listen is not null && batchPath is not null) throw new UsageException("--prompts-file cannot be used with --cluster-listen.");
            if (parse.GetValue(stageWait) is var wait && (!double.IsFinite(wait) || wait <= 0)) throw new UsageException($"--stage-wait-s {wait}: must be > 0.");

            var model = ModelResolver.Resolve(options.Model, options.Path);
            var tokenizer = FlexGenSetup.LoadTokenizer(model);
            long[,]? ids = null;
            if (inputPath is not null) ids = ReadInputIds(inputPath, model);
            else if (prompts.Length > 0)
            {
                if (tokenizer is null)
                    throw new UsageException($"--prompt needs {Text.BpeTokenizer.FilesOf(model.Config.Family.Tokenizer(model.Config).Kind)} in the model folder ({model.Location.Folder ?? model.Config.Name}); use --input-ids instead.");
                ids = PromptMatrix.LeftPad(prompts.Select(p => tokenizer.Encode(p).Select(i => (long)i).ToArray()).ToList(), model.Config.PadTokenId);
            }
            else if (batchPath is null) ids = ReadInputIds(BuiltInPromptsPath, model);
            if (ids is not null) CheckPrompts(ids, genLen, model);
            var stopStrings = flags.GetStopStrings(parse, tokenizer);

            var settings = new GenerationSettings(genLen)
            {
                Sampling = flags.Sampling(parse, parse.GetValue(doSample), temp, parse.GetValue(seed)),
                // Text prompts of a family that ends its text with EOS stop there unless --stop says otherwise.
                StopTokenId = ParseStop(parse.GetValue(stop), tokenizer, model)
                    ?? (prompts.Length > 0 && model.Config.Family.Tokenizer(model.Config).StopAtEos ? model.Config.EosTokenId : null),
            };

            if (ids is null)
            {
                if (options.Policy.Auto) throw new UsageException("--policy auto plans one run's prompt length and prompt count; a --prompts-file job has many: give its policy.");
                // --prompts-file: per prompt its max_tokens, and the EOS stop of text prompts as above.
                bool eosStop = settings.StopTokenId is null && model.Config.Family.Tokenizer(model.Config).StopAtEos;
                GenerationSettings SettingsOf(BatchPrompt p) => settings with
                {
                    GenLen = p.MaxTokens, StopTokenId = p.IsText && eosStop ? model.Config.EosTokenId : settings.StopTokenId,
                };
                return await BatchJob.RunAsync(parse, console, new BatchJobRequest(batchPath!, batchOutput!, options, model, tokenizer, genLen, SettingsOf,
                    PolicyFlags.GetBool(parse, warmup), parse.GetValue(flags.Trace), stopStrings), cancellation);
            }

            (options.Policy.PlanPromptLen, options.Policy.PlanGenLen, options.Policy.PlanMaxBlockSize) = (ids.GetLength(1), genLen, ids.GetLength(0));
            if (listen is not null)
            {
                // The planner chooses one node's policy; each stage of a cluster runs under its own.
                if (options.Policy.Auto) throw new UsageException("--policy auto cannot be used with --cluster-listen: give this stage's policy (each worker gives its own).");
                options.Cluster = new StageClusterOptions
                {
                    Listen = listen, Stages = parse.GetValue(stages), StageWaitSeconds = parse.GetValue(stageWait), MaxPromptLen = ids.GetLength(1), MaxGenLen = genLen,
                };
            }

            var clock = Stopwatch.StartNew();
            return await FlexGenCli.RunWithRuntimeAsync(parse, console, options, model, (ids.GetLength(1), genLen), async runtime =>
            {
                console.Output.WriteLine(GenerationFlags.Describe(runtime));
                if (listen is not null)
                {
                    console.Error.WriteLine($"cluster: formed at {listen}; waiting up to {parse.GetValue(stageWait):0} s for {parse.GetValue(stages) - 1} workers ...");
                    console.Output.WriteLine(await runtime.FormPipelineAsync(cancellation));
                }
                int n = ids.GetLength(0);
                if (PolicyFlags.GetBool(parse, warmup))
                {
                    console.Error.WriteLine("warmup: 1 token");
                    var first = new long[Math.Min(n, runtime.Policy.GpuBatchSize * runtime.Policy.NumGpuBatches), ids.GetLength(1)];
                    Array.Copy(ids, first, first.Length);
                    await runtime.Service.GenerateBatchAsync(first, new GenerationSettings(1), cutGenLen: null, progress: null, cancellation);
                }
                console.Error.WriteLine($"generate: {n} prompts of {ids.GetLength(1)} tokens, {genLen} new tokens each ...");
                BatchGeneration result;
                using (var progress = new GenerationProgressDisplay(console, "generate", n, runtime.Policy.GpuBatchSize * runtime.Policy.NumGpuBatches, genLen))
                {
                    result = await runtime.Service.GenerateBatchAsync(ids, settings, cutGenLen: null, progress, cancellation);
                    progress.Complete();
                }
                if (tokenizer is not null) result = StopStrings.Apply(result, stopStrings, tokenizer.Decode, model.Config.PadTokenId);

                console.Output.WriteLine($"generated ids ({n}, {genLen}):");
                for (int r = 0; r < n; r++)
                {
                    var row = Enumerable.Range(0, genLen).Select(c => result.OutputIds[r, c]);
                    console.Output.WriteLine($"  [{r}] {string.Join(' ', row)}");
                    if (result.Texts is { } texts) console.Output.WriteLine($"      {Quote(texts[r])}");
                }
                var stats = result.Statistics;
                console.Output.WriteLine(
                    $"throughput: prefill {stats.PrefillThroughput:F1} token/s, decode {stats.DecodeThroughput:F1} token/s, " +
                    $"total {stats.TotalThroughput:F1} token/s ({n} x {genLen} tokens in {stats.Total.TotalSeconds:F3} s; " +
                    $"{clock.Elapsed.TotalSeconds:F2} s with start-up)");
                if (runtime.Setup.AutoPlan is { } auto)
                    console.Output.WriteLine(
                        $"auto predicted vs measured: prefill {auto.Prediction.PrefillThroughput:F1} vs {stats.PrefillThroughput:F1}, " +
                        $"decode {auto.Prediction.DecodeThroughput:F1} vs {stats.DecodeThroughput:F1}, total {auto.Prediction.Throughput:F1} vs {stats.TotalThroughput:F1} token/s");
                GenerationFlags.PrintPeaks(console.Output, stats);
                if (outputPath is not null)
                {
                    string written = GenerationFlags.WriteFile("--output-ids", outputPath, full => WriteOutputIds(full, result.OutputIds));
                    console.Output.WriteLine($"output ids: {written}");
                }
                GenerationFlags.PrintTimeline(console.Output, result.Timeline, parse.GetValue(flags.Trace));
                return ExitCodes.Success;
            }, cancellation);
        });
        return command;
    }

    /// <summary>Reads an int64 (n, prompt_len) .npy of prompt ids; anything else is a usage error naming the file.</summary>
    public static long[,] ReadInputIds(string path, ResolvedModel model)
    {
        if (!File.Exists(path)) throw new UsageException($"--input-ids {path}: file not found.");
        NpyHeader header;
        try { header = NpyFile.ReadHeader(path); }
        catch (NpyFormatException ex) { throw new UsageException($"--input-ids {path}: not a readable .npy file ({ex.Message})."); }
        // A link loop, a folder, no permission: the flag's problem, as a missing file is.
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { throw new UsageException($"--input-ids {path}: cannot be read ({ex.Message})."); }
        // int32 is accepted too: numpy writes int32 where its default integer is 32-bit, and FlexLLMGen's token files are int32.
        if (header.DType is not (torch.ScalarType.Int64 or torch.ScalarType.Int32) || header.Shape.Count != 2 || header.Shape[0] < 1 || header.Shape[1] < 1)
            throw new UsageException(
                $"--input-ids {path}: expected int64 (or int32) of shape (n, prompt_len), got {header.Descr} of shape ({string.Join(", ", header.Shape)}).");
        using var stored = ReadTensor(path);
        using var tensor = stored.to_type(torch.ScalarType.Int64);
        int rows = (int)header.Shape[0], cols = (int)header.Shape[1];
        var flat = tensor.data<long>().ToArray();
        var ids = new long[rows, cols];
        Buffer.BlockCopy(flat, 0, ids, 0, flat.Length * sizeof(long));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (ids[r, c] < 0 || ids[r, c] >= model.Config.VocabSize)
                    throw new UsageException($"--input-ids {path}: id {ids[r, c]} at ({r}, {c}) is outside the vocabulary [0, {model.Config.VocabSize}).");
        return ids;
    }

    private static torch.Tensor ReadTensor(string path)
    {
        try { return NpyFile.Read(path); }
        catch (NpyFormatException ex) { throw new UsageException($"--input-ids {path}: not a readable .npy file ({ex.Message})."); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { throw new UsageException($"--input-ids {path}: cannot be read ({ex.Message})."); }
    }

    private static void CheckPrompts(long[,] ids, int genLen, ResolvedModel model)
    {
        int promptLen = ids.GetLength(1);
        if (!model.Config.Fits(promptLen, genLen))
            throw new UsageException(
                $"prompt length {promptLen} + --gen-len {genLen} - 1 positions exceed {model.Config.Name}'s max sequence length {model.Config.MaxSeqLen}.");
    }

    private static void WriteOutputIds(string path, long[,] outputIds)
    {
        var flat = new long[outputIds.Length];
        Buffer.BlockCopy(outputIds, 0, flat, 0, flat.Length * sizeof(long));
        using var tensor = torch.tensor(flat, [outputIds.GetLength(0), outputIds.GetLength(1)]);
        NpyFile.Write(path, tensor);
    }

    private static int? ParseStop(string? stop, Text.BpeTokenizer? tokenizer, ResolvedModel model)
    {
        if (stop is null) return null;
        if (long.TryParse(stop, out long id))
        {
            if (id < 0 || id >= model.Config.VocabSize)
                throw new UsageException($"--stop {stop}: token id outside the vocabulary [0, {model.Config.VocabSize}).");
            return (int)id;
        }
        if (tokenizer is null) throw new UsageException($"--stop {stop}: text stop tokens need the model's tokenizer; give a token id.");
        var encoded = tokenizer.EncodeText(stop).ToList();
        if (encoded.Count != 1) throw new UsageException($"--stop {stop}: encodes to {encoded.Count} tokens; it must be exactly one.");
        return encoded[0];
    }

    private static string Quote(string text) => "\"" + text.Replace("\n", "\\n", StringComparison.Ordinal) + "\"";
}
