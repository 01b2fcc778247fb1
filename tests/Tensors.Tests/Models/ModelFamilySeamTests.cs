namespace FlexGen.Tensors.Tests.Models;

using FlexGen.Tensors.Families.Opt;
using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Placement;
using FlexGen.Tensors.Policies;
using FlexGen.Tensors.Tests.Layers;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>The model-family seam: the registry, a family's geometry driving placement, config values reaching the math.</summary>
public class ModelFamilySeamTests
{
    [Fact]
    public void Registry_should_resolve_the_bundled_model_folder_to_its_family()
    {
        var config = ModelFamilies.FromConfigFile(OptTiny.ModelDir);

        Assert.IsType<OptFamily>(config.Family);
        Assert.Equal(OptConfig.FromHuggingFaceConfig(OptTiny.ModelDir), config);
        Assert.Equal(config, ModelFamilies.FromNameOrPath(OptTiny.ModelDir));
    }

    [Fact]
    public void Registry_should_resolve_presets_and_list_them()
    {
        Assert.Equal(OptConfig.FromPreset("opt-1.3b"), ModelFamilies.FromPreset("facebook/opt-1.3b"));
        Assert.True(ModelFamilies.IsPreset("opt-350m")); // known, refused when resolved
        Assert.Throws<UnsupportedModelException>(() => ModelFamilies.FromPreset("opt-350m"));
        Assert.All(OptConfig.PresetNames, name => Assert.Contains(name, ModelFamilies.PresetNames));
        var unknown = Assert.Throws<UnknownModelException>(() => ModelFamilies.FromPreset("no-such-model"));
        Assert.Equal(ModelFamilies.PresetNames, unknown.KnownPresets);
    }

    [Fact]
    public void Registry_should_refuse_a_config_no_family_reads_naming_the_families()
    {
        var folder = Directory.CreateTempSubdirectory("family-seam-");
        try
        {
            File.WriteAllText(Path.Combine(folder.FullName, "config.json"), """{ "model_type": "mamba" }""");

            var ex = Assert.Throws<UnsupportedModelException>(() => ModelFamilies.FromConfigFile(folder.FullName));

            Assert.Equal("model_type", ex.Key);
            Assert.Contains("only OPT models", ex.Message);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public void Placement_should_follow_the_familys_layers_kv_heads_and_byte_formulas()
    {
        // 8 query heads share 2 KV heads: cache rows are gpu_batch * 2, mixed segments whole multiples of 2.
        var config = new GroupedQueryTestConfig { Name = "gqa-test", HiddenSize = 64 };
        var policy = Policy.FromPercent([100, 0, 30, 70, 100, 0], gpuBatchSize: 5, numGpuBatches: 2);

        var plan = PlacementPlan.Create(config, policy, promptLen: 7, genLen: 4);

        Assert.Equal([7 + 4 - 1, 5 * config.KvHeads, config.HeadDim], plan.Cache.Shape);
        Assert.True(plan.Cache.IsMixed);
        Assert.Equal(0, plan.Cache.GpuLength % config.KvHeads);
        Assert.Equal(2, plan.Cache.GpuLength); // 30% of 10 rows = 3, rounded down to a multiple of kv_heads 2
        Assert.Equal(10 - 2, plan.Cache.CpuLength);
        Assert.Equal(config.NumBlocks, plan.Cache.AttentionLayers);
        Assert.Equal(config.CacheBytes(5 * 2, 7 + 4 - 1), plan.CacheBytes.Total);
        Assert.Equal(config.HiddenBytes(5 * 2, 7), plan.Activations.Bytes);
        Assert.Equal(config.Layers(policy.SepLayer).Select(l => l.Kind), plan.Layers.Select(l => l.Layer.Kind));
        Assert.Equal(config.Layers(policy.SepLayer).Sum(l => l.WeightBytes), plan.WeightBytes.Total);
    }

    [Fact]
    public void A_joint_block_should_split_its_weights_by_group()
    {
        var block = OptWeightSpecs.Layers(SmallOpt.Config, sepLayer: false)[1];
        var items = Enumerable.Range(0, block.Weights.Count).ToArray();

        Assert.Equal(LayerKind.Block, block.Kind);
        Assert.Equal(OptWeightSpecs.SelfAttention(SmallOpt.Config, 0).Count, block.Group(items, LayerSpec.AttentionGroup).Count);
        Assert.Equal(items.Skip(block.WeightGroups[0].Count), block.Group(items, LayerSpec.MlpGroup));
    }

    [Fact]
    public void LayerNormEps_of_the_config_should_reach_the_layer_math()
    {
        using var weights = SmallOpt.Weights();
        var mlp = OptWeightSpecs.Mlp(SmallOpt.Config, 0).Select(s => weights[s.FileName]).ToArray();
        using var scope = NewDisposeScope();
        var hidden = torch.randn([2, 3, SmallOpt.Config.HiddenSize], generator: new Generator(5, CPU));

        var usual = SmallOpt.Config.Compute().Mlp(hidden, mlp, ComputeSettings.Float32);
        var sameEps = (SmallOpt.Config with { LayerNormEps = OptConfig.DefaultLayerNormEps }).Compute().Mlp(hidden, mlp, ComputeSettings.Float32);
        var largeEps = (SmallOpt.Config with { LayerNormEps = 10.0 }).Compute().Mlp(hidden, mlp, ComputeSettings.Float32);

        Assert.True(usual.allclose(sameEps, rtol: 0, atol: 0));
        Assert.True(usual.sub(largeEps).abs().max().item<float>() > 1e-3f);
    }

    [Fact]
    public void Dummy_weights_should_follow_the_specs_init_hint_not_the_file_name()
    {
        using var scope = NewDisposeScope();
        var norm = torch.empty(1000);
        var matrix = torch.empty(1000);
        DummyWeights.FillRandom(norm, new WeightSpec("any.name", [1000], ScalarType.Float16, WeightInit.NormScale), seed: 3);
        DummyWeights.FillRandom(matrix, new WeightSpec("any.name", [1000], ScalarType.Float16), seed: 3);

        Assert.True(norm.sub(matrix).sub(1).abs().max().item<float>() < 1e-6f);
    }

    /// <summary>A test-only grouped-query-attention shape: 3 blocks, 8 query heads, 2 KV heads.</summary>
    private sealed record GroupedQueryTestConfig : ModelConfig
    {
        public override IModelFamily Family => new GroupedQueryTestFamily();
        public override int NumBlocks => Blocks;
        public int Blocks { get; init; } = 3;
        public override ModelConfig WithBlocks(int blocks) => this with { Blocks = blocks };
        public override int FfnSize => 4 * HiddenSize;
        public override required int HiddenSize { get; init; }
        public override int NumHeads => 8;
        public override int KvHeads => 2;
        public override int VocabSize { get; init; } = 50;
        public override int MaxSeqLen { get; init; } = 32;
        public override int PadTokenId { get; init; }
        public override int BosTokenId { get; init; } = 1;
        public override int EosTokenId { get; init; } = 2;
        public override int DtypeBytes { get; init; } = 2;
        public override long ModelBytes() => Layers(sepLayer: true).Sum(l => l.WeightBytes);
    }

    /// <summary>Only the layout: what placement needs of a family.</summary>
    private sealed class GroupedQueryTestFamily : IModelFamily
    {
        public string Name => "gqa-test";
        public IReadOnlyList<string> PresetNames => [];
        public bool Reads(string modelType, IReadOnlyList<string> architectures) => false;
        public ModelConfig ReadConfig(HuggingFaceConfig config) => throw new NotSupportedException();
        public bool IsPreset(string name) => false;
        public ModelConfig FromPreset(string name) => throw new NotSupportedException();
        public ModelConfig OfSize(string name, int blocks, int hiddenSize, int heads, int vocabSize, int maxSeqLen) =>
            throw new NotSupportedException();
        public ILayerCompute Compute(ModelConfig config) => throw new NotSupportedException();
        public CheckpointNaming Checkpoint(ModelConfig config) => throw new NotSupportedException();
        public TokenizerSpec Tokenizer(ModelConfig config) => throw new NotSupportedException();

        public IReadOnlyList<LayerSpec> Layers(ModelConfig config, bool sepLayer)
        {
            long h = config.HiddenSize, kv = (long)config.KvHeads * config.HeadDim;
            return LayerSpec.InExecutionOrder(config.NumBlocks, sepLayer,
                [Spec("embed", config.VocabSize, h)],
                i => [Spec($"l{i}.norm", h), Spec($"l{i}.q", h, h), Spec($"l{i}.k", kv, h), Spec($"l{i}.v", kv, h), Spec($"l{i}.o", h, h)],
                i => [Spec($"l{i}.mlp_norm", h), Spec($"l{i}.up", 3 * h, h), Spec($"l{i}.down", h, 3 * h)],
                [Spec("norm", h), Spec("lm_head", config.VocabSize, h)]);
        }

        private static WeightSpec Spec(string name, params long[] shape) => new(name, shape, ScalarType.Float16);
    }
}
