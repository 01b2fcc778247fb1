namespace FlexGen.Host.Tests.UnseenModels;

using System.Globalization;
using FlexGen.Tensors.Npy;
using FlexGen.Tensors.Policies;
using TorchSharp;

/// <summary>
/// A random Hugging Face checkpoint of some family converted with `flexgen convert`, its weights for the oracle, in a
/// temp folder; `flexgen generate` runs on the converted folder.
/// </summary>
/// <typeparam name="TShape">The family's made-up model shape.</typeparam>
public abstract class ConvertedCheckpoint<TShape> : IDisposable
    where TShape : notnull
{
    private readonly TempFolder _folder = new();

    protected ConvertedCheckpoint(TShape shape, CheckpointLayout layout) => (Shape, Layout) = (shape, layout);

    public TShape Shape { get; }

    public CheckpointLayout Layout { get; }

    public string Folder => _folder.File("flexgen");

    public string HfFolder => _folder.File("hf");

    public Dictionary<string, torch.Tensor> HfWeights { get; private set; } = [];

    /// <summary>`flexgen convert`'s output.</summary>
    public string ConvertOutput { get; private set; } = "";

    public string Scratch(string name) => _folder.File(name);

    /// <summary>
    /// `flexgen generate --model out --input-ids ids.npy --output-ids out.npy --compute-dtype float32` plus the policy's
    /// flags. Checks the output file is int64 (n, gen_len); returns it, or the CLI result when it failed.
    /// </summary>
    public async Task<(long[,]? Tokens, CliRunner.CliResult Result)> GenerateAsync(long[,] ids, Policy policy, int genLen,
        torch.ScalarType inputDtype = torch.ScalarType.Int64)
    {
        string run = Scratch("run-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(run);
        string input = Path.Combine(run, "ids.npy"), output = Path.Combine(run, "out.npy");
        using (var tensor = torch.tensor(ConvertedModel.Flatten(ids), [ids.GetLength(0), ids.GetLength(1)]))
        using (var typed = tensor.to_type(inputDtype))
            NpyFile.Write(input, typed);
        var result = await CliRunner.RunAsync([
            "generate", "--model", Folder, "--input-ids", input, "--output-ids", output, "--compute-dtype", "float32",
            "--gen-len", genLen.ToString(CultureInfo.InvariantCulture), "--trace", "", "--offload-dir", Path.Combine(run, "offload"),
            .. PolicyMatrixTests.Flags(policy)]);
        if (result.ExitCode != 0) return (null, result);
        var header = NpyFile.ReadHeader(output);
        if (header.DType != torch.ScalarType.Int64 || !header.Shape.SequenceEqual([ids.GetLength(0), (long)genLen]))
            throw new InvalidOperationException(
                $"output ids: {header.Descr} ({string.Join(", ", header.Shape)}), expected int64 ({ids.GetLength(0)}, {genLen})");
        var tokens = Fixture.ReadInt64Matrix(output);
        Directory.Delete(run, recursive: true);
        return (tokens, result);
    }

    public void Dispose()
    {
        foreach (var t in HfWeights.Values) t.Dispose();
        _folder.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Writes <paramref name="model"/>'s Hugging Face folder with <paramref name="writeCheckpoint"/> (which returns the
    /// weights) and converts it with `flexgen convert`; disposes the model when either fails.
    /// </summary>
    protected static async Task<TModel> ConvertAsync<TModel>(TModel model, Func<TModel, Dictionary<string, torch.Tensor>> writeCheckpoint)
        where TModel : ConvertedCheckpoint<TShape>
    {
        try
        {
            model.HfWeights = writeCheckpoint(model);
            var convert = await CliRunner.RunAsync("convert", model.HfFolder, model.Folder);
            if (convert.ExitCode != 0) throw new InvalidOperationException($"convert failed for {model.Shape}:\n{convert}");
            model.ConvertOutput = convert.Output;
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
