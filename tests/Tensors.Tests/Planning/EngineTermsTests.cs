namespace FlexGen.Tensors.Tests.Planning;

using FlexGen.Tensors.Layers;
using FlexGen.Tensors.Models;
using FlexGen.Tensors.Planning;
using static FlexGen.Tensors.Tests.Planning.PlanningTestSupport;

/// <summary>The terms beyond FlexLLMGen's model (<see cref="EngineTerms"/>), one at a time, against the exact port.</summary>
public class EngineTermsTests
{
    private static readonly PlanPlacement AllGpu = PlanPlacement.FromPercent([100, 0, 100, 0, 100, 0]);
    private static readonly PlanPlacement WeightsCpu = PlanPlacement.FromPercent([0, 100, 100, 0, 100, 0]);
    private static readonly PlanPlacement CacheCpu = PlanPlacement.FromPercent([100, 0, 0, 100, 100, 0]);
    private static readonly PlanPlacement CacheDisk = PlanPlacement.FromPercent([100, 0, 0, 0, 100, 0]);

    private static readonly HardwareProfile Hw = T4 with { CompBdw = 100e9 };

    private static CostTerms Terms(string preset, EngineTerms? engine, PlanBlock? block = null, HardwareProfile? hardware = null) =>
        new(OnT4(preset, 256, 32) with { Engine = engine, Hardware = hardware ?? Hw }, block ?? new PlanBlock(8, 2));

    [Fact]
    public void Compression_should_cut_the_weight_bytes_term_to_a_quarter_plus_the_group_scales()
    {
        var plain = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true));
        var compressed = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true, CompressWeight: true));

        Near(plain.LayerWeightBytes * (32 + 4) / 128.0, compressed.LayerWeightBytes);
        // cpu->gpu in prefill carries the weights homed on the CPU (and no hidden states when those are on the GPU).
        Near(plain.CtogPrefill.Evaluate(WeightsCpu) * 0.28125, compressed.CtogPrefill.Evaluate(WeightsCpu));
        var weightsOnDisk = PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0]);
        Near(plain.Disk.Bytes.Evaluate(weightsOnDisk) * 0.28125, compressed.Disk.Bytes.Evaluate(weightsOnDisk));
    }

    [Fact]
    public void Compression_should_cost_its_dequantization_on_the_compute()
    {
        var plain = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true));
        var compressed = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true, CompressWeight: true));
        double wi16 = plain.LayerWeightBytes;

        Near(plain.ComputeDecode.Evaluate(AllGpu) + wi16 / Hw.CompBdw!.Value, compressed.ComputeDecode.Evaluate(AllGpu));
    }

    [Fact]
    public void Compression_without_the_profiles_comp_bdw_should_be_refused_by_name()
    {
        var ex = Assert.Throws<HardwareProfileException>(() => Terms("opt-6.7b", new EngineTerms(true, CompressCache: true), hardware: T4));

        Assert.Contains("comp_bdw", ex.Message);
    }

    [Fact]
    public void A_compressed_cache_should_store_and_move_a_quarter_of_the_cache_bytes()
    {
        var plain = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true));
        var compressed = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true, CompressCache: true));

        Near(plain.DtocDecode.Evaluate(CacheDisk) * 0.28125, compressed.DtocDecode.Evaluate(CacheDisk));
        Near(plain.Disk.Bytes.Evaluate(CacheDisk) * 0.28125, compressed.Disk.Bytes.Evaluate(CacheDisk));
    }

    [Fact]
    public void Grouped_query_attention_should_scale_the_cache_by_kv_heads_over_heads()
    {
        var config = ModelFamilies.FromPreset("llama-3.1-8b");
        Assert.Equal(4, config.NumHeads / config.KvHeads); // 32 heads, 8 KV heads
        var shape = ModelShape.Of(config);
        var problem = new PlanProblem(shape, 256, 32, new PlanBudgets(1L << 40, 1L << 40, 1L << 40), Hw) { Engine = new EngineTerms(true) };
        var asIfMha = problem with { Model = shape with { KvHeads = shape.Heads } };
        var block = new PlanBlock(8, 2);

        var gqa = new CostTerms(problem, block);
        var mha = new CostTerms(asIfMha, block);

        Near(mha.Disk.Bytes.Evaluate(CacheDisk) / 4, gqa.Disk.Bytes.Evaluate(CacheDisk));
        Near(mha.GtocPrefill.Evaluate(CacheCpu) / 4, gqa.GtocPrefill.Evaluate(CacheCpu));
        // Attention FLOPs run over every query head: the CPU's attention time is the same.
        Near(mha.ComputeDecode.Evaluate(CacheCpu), gqa.ComputeDecode.Evaluate(CacheCpu));
    }

    [Fact]
    public void A_three_matrix_mlp_should_count_its_weights_and_flops_from_the_family()
    {
        var config = ModelFamilies.FromPreset("llama-3.1-8b");
        var shape = ModelShape.Of(config);
        long h = config.HiddenSize, ffn = config.FfnSize, kv = (long)config.KvHeads * config.HeadDim;

        Assert.Equal(3 * h * ffn, shape.MlpWeightElements);
        Assert.Equal(2 * h * h + 2 * h * kv, shape.AttentionWeightElements);
        var terms = new CostTerms(new PlanProblem(shape, 256, 32, new PlanBudgets(1L << 40, 1L << 40, 1L << 40), Hw), new PlanBlock(4, 1));
        Near(2.0 * (2 * h * h + 2 * h * kv + 3 * h * ffn), terms.LayerWeightBytes);
        Near(4 * 2.0 * (2 * h * h + 2 * h * kv + 3 * h * ffn) / Hw.MmFlopsG + 4 * 4 * (256 + 16) * h / Hw.BmmFlopsG,
            terms.ComputeDecode.Evaluate(AllGpu));
    }

    [Fact]
    public void Cpu_cache_compute_should_move_no_cache_over_cpu_to_gpu_but_the_attention_rows()
    {
        var block = new PlanBlock(8, 2);
        var onCpu = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true), block);
        double h1 = 4096, bls = 16;

        // Only the attention output of the CPU-attended rows comes back (the weights and hidden states are on the GPU).
        Near(2 * h1 * bls / Hw.CtogBdw, onCpu.CtogDecode.Evaluate(CacheCpu));
        // Their q, k and v go down.
        Near(2 * 3 * h1 * bls / Hw.GtocBdwHidden, onCpu.GtocDecode.Evaluate(CacheCpu));
        // The CPU attends them at FlexLLMGen's CPU rate.
        var port = Terms("opt-6.7b", null, block);
        Near(port.ComputeDecode.Evaluate(CacheCpu), onCpu.ComputeDecode.Evaluate(CacheCpu) - onCpu.ComputeDecode.Evaluate(AllGpu) + port.ComputeDecode.Evaluate(AllGpu), 1e-6);
    }

    [Fact]
    public void Without_cpu_cache_compute_the_cpu_cache_should_come_to_the_gpu_every_step()
    {
        var block = new PlanBlock(8, 2);
        var onGpu = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: false), block);
        double h1 = 4096, bls = 16, seq = 256 + 32 / 2.0;

        Near(4 * h1 * bls * seq / Hw.CtogBdw, onGpu.CtogDecode.Evaluate(CacheCpu));
        Assert.Equal(0, onGpu.GtocDecode.Evaluate(CacheCpu));
        // ... and the GPU attends it at the GPU's rate: the same time wherever the cache lives.
        Near(onGpu.ComputeDecode.Evaluate(AllGpu), onGpu.ComputeDecode.Evaluate(CacheCpu));
    }

    [Fact]
    public void Overlap_off_should_add_the_terms_instead_of_taking_the_longest()
    {
        var block = new PlanBlock(8, 2);
        var serial = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true, Overlap: false), block);
        var overlapped = Terms("opt-6.7b", new EngineTerms(CpuCacheCompute: true), block);
        var p = PlanPlacement.FromPercent([0, 50, 0, 100, 100, 0]);

        double sum = serial.StepTimes(p).Where(t => t.Phase == "decode").Sum(t => t.SecondsPerStep);
        Near(sum, Assert.Single(serial.DecodeBounds).Seconds.Evaluate(p));
        Assert.True(overlapped.DecodeBounds.Max(b => b.Seconds.Evaluate(p)) < sum);
    }

    [Fact]
    public void The_engines_terms_should_leave_nothing_of_FlexLLMGens_for_opt_but_the_output_head()
    {
        // With the head left out (its elements zero) and CPU attention, only the q, k, v traffic differs, and only for cache off the GPU.
        var shape = ModelShape.Of(ModelFamilies.FromPreset("opt-6.7b")) with { HeadWeightElements = 0 };
        var problem = OnT4("opt-6.7b", 256, 32) with { Model = shape, Hardware = Hw };
        var block = new PlanBlock(8, 2);
        var port = new CostTerms(problem, block);
        var engine = new CostTerms(problem with { Engine = new EngineTerms(CpuCacheCompute: true) }, block);
        var p = PlanPlacement.FromPercent([30, 50, 100, 0, 100, 0]);

        Assert.Equal(port.StepTimes(p).Select(t => t.SecondsPerStep), engine.StepTimes(p).Select(t => t.SecondsPerStep));
        Near(port.GpuDecode.Bytes.Evaluate(p), engine.GpuDecode.Bytes.Evaluate(p));
    }

    [Fact]
    public void The_matmul_curve_should_set_the_rate_at_a_gpu_batchs_rows_with_the_engines_terms_only()
    {
        var curved = Hw with { MmFlopsByRows = [(1, 1e12), (16, 2e12), (256, 4e12)] };
        Near(1.5e12, curved.MatmulFlops(4, 0)); // halfway in log2 between 1 and 16
        Near(4e12, curved.MatmulFlops(4096, 0));
        Near(1e12, curved.MatmulFlops(0.5, 0));
        Assert.Equal(7, Hw.MatmulFlops(4, 7));
        // A dip at more rows is no bound: those rows can run as pieces of fewer.
        var dipped = Hw with { MmFlopsByRows = [(8, 1e12), (32, 3e12), (64, 2e12), (128, 4e12)] };
        Near(3e12, dipped.MatmulFlops(64, 0));
        Near(3e12, dipped.MatmulFlops(48, 0));
        Near(3.5e12, dipped.MatmulFlops(Math.Pow(2, 6.75), 0)); // three quarters in log2 from 64 to 128: above the dip
        Near(4e12, dipped.MatmulFlops(4096, 0));

        var block = new PlanBlock(16, 1);
        var port = new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = curved }, block);
        Near(new CostTerms(OnT4("opt-6.7b", 256, 32), block).ComputeDecode.Evaluate(AllGpu), port.ComputeDecode.Evaluate(AllGpu));
        var engine = new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = curved, Model = ModelShape.Of(ModelFamilies.FromPreset("opt-6.7b")) with { HeadWeightElements = 0 }, Engine = new EngineTerms(true) }, block);
        double blockElements = 4.0 * 4096 * 4096 + 2.0 * 4096 * 16384;
        Near(2 * 16 * blockElements / 2e12 + 4 * 16 * (256 + 16) * 4096 / Hw.BmmFlopsG, engine.ComputeDecode.Evaluate(AllGpu));
    }

    [Fact]
    public void An_emulated_gpu_should_share_the_cpu_budget()
    {
        var problem = OnT4("opt-1.3b", 256, 32, gpuGb: 4, cpuGb: 4) with { Budgets = new PlanBudgets(4L << 30, 4L << 30, 100L << 30) { GpuInCpuMemory = true } };
        var terms = new CostTerms(problem, new PlanBlock(4, 1));

        var shared = terms.MemoryLimits().Single(l => l.Name == "gpu + cpu decode");
        var half = PlanPlacement.FromPercent([50, 50, 100, 0, 100, 0]);
        Near(terms.GpuDecode.Bytes.Evaluate(half) + terms.CpuDecode.Bytes.Evaluate(half), shared.Peak.Bytes.Evaluate(half));
        Assert.DoesNotContain(new CostTerms(OnT4("opt-1.3b", 256, 32), new PlanBlock(4, 1)).MemoryLimits(), l => l.Name.StartsWith("gpu + cpu", StringComparison.Ordinal));
    }

    [Fact]
    public void The_profiles_optional_keys_should_survive_their_json_round_trip()
    {
        var profile = Hw with { MmFlopsByRows = [(8, 40e9), (1, 10e9), (512, 140e9)], TaskSeconds = 2e-4, MatmulShareWhileDiskReads = 0.58, DiskShareWhileComputing = 0.73, DiskSpanBytes = 2147483648 };

        var read = HardwareProfile.Parse(profile.ToJson(), "round trip");

        Assert.Equal(profile.CompBdw, read.CompBdw);
        Assert.Equal(profile.TaskSeconds, read.TaskSeconds);
        Assert.Equal(0.58, read.MatmulShareWhileDiskReads);
        Assert.Equal(0.73, read.DiskShareWhileComputing);
        Assert.Equal(2147483648, read.DiskSpanBytes);
        Assert.Equal([(1, 10e9), (8, 40e9), (512, 140e9)], read.MmFlopsByRows!);
        Assert.Equal(profile.ToJson(), read.ToJson());
        Assert.Null(HardwareProfile.Parse(T4.ToJson(), "FlexLLMGen's keys only").MmFlopsByRows);
    }

    [Theory]
    [InlineData("\"mm_flops_rows\": 3", "must be an object")]
    [InlineData("\"mm_flops_rows\": { \"0\": 1e9 }", "\"0\" must be rows >= 1")]
    [InlineData("\"mm_flops_rows\": { \"8\": -1 }", "\"8\" must be rows >= 1 with a positive FLOP/s")]
    [InlineData("\"mm_flops_rows\": { }", "has no points")]
    [InlineData("\"comp_bdw\": 0", "\"comp_bdw\" must be positive")]
    [InlineData("\"mm_share_dtoc\": 0", "\"mm_share_dtoc\" must be positive")]
    [InlineData("\"dtoc_span_bytes\": -1", "\"dtoc_span_bytes\" must be positive")]
    [InlineData("\"mm_share_dtoc\": 1.2", "\"mm_share_dtoc\" is a share of the compute rate, at most 1")]
    [InlineData("\"dtoc_share_mm\": 0", "\"dtoc_share_mm\" must be positive")]
    [InlineData("\"dtoc_share_mm\": 1.5", "\"dtoc_share_mm\" is a share of the disk's read rate, at most 1")]
    public void A_bad_optional_key_should_be_refused_by_name(string entry, string reason)
    {
        string json = T4.ToJson().TrimEnd().TrimEnd('}') + ", " + entry + " }";

        var ex = Assert.Throws<HardwareProfileException>(() => HardwareProfile.Parse(json, "hw.json"));

        Assert.Contains(reason, ex.Message);
    }

    [Fact]
    public void The_ranked_search_should_hold_blocks_to_the_cap_and_rank_best_first()
    {
        var problem = OnT4("opt-1.3b", 64, 16) with { Engine = new EngineTerms(CpuCacheCompute: true) };

        var ranked = PolicySearch.Ranked(problem, maxBlockSize: 48);

        Assert.NotEmpty(ranked.Feasible);
        Assert.All(ranked.Feasible, e => Assert.True(e.Block.BlockSize <= 48, $"{e.Block}"));
        Assert.Equal(ranked.Feasible.Select(e => e.Throughput).OrderByDescending(t => t), ranked.Feasible.Select(e => e.Throughput));
        Assert.Contains(ranked.Feasible, e => e.Block.BlockSize == 48);
    }

    [Fact]
    public void The_engines_task_time_should_be_paid_per_layer_task_of_each_gpu_batch()
    {
        var withTasks = Hw with { TaskSeconds = 1e-3 };
        var block = new PlanBlock(8, 3);
        double l = 32; // opt-6.7b's blocks: two tasks each (attention, MLP), and the embedding and output tasks of a step
        var plain = new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = Hw, Engine = new EngineTerms(true) }, block);
        var tasks = new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = withTasks, Engine = new EngineTerms(true) }, block);
        var joint = new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = withTasks, Engine = new EngineTerms(true, SepLayer: false) }, block);

        Near(plain.ComputeDecode.Evaluate(AllGpu) + 1e-3 * 3 * (2 + 2 / l), tasks.ComputeDecode.Evaluate(AllGpu));
        Near(plain.ComputePrefill.Evaluate(AllGpu) + 1e-3 * 3 * (1 + 2 / l), joint.ComputePrefill.Evaluate(AllGpu));
        // FlexLLMGen's model has no such term.
        Near(new CostTerms(OnT4("opt-6.7b", 256, 32), block).ComputeDecode.Evaluate(AllGpu),
            new CostTerms(OnT4("opt-6.7b", 256, 32) with { Hardware = T4 with { TaskSeconds = 1e-3 } }, block).ComputeDecode.Evaluate(AllGpu));
    }

    [Fact]
    public void Grouped_batches_should_take_the_matmul_rate_at_the_blocks_rows_and_pay_the_tasks_once_per_layer()
    {
        // 8 x 4: a GPU batch's rows are 8 (decode) and 8 * 256 (prefill); the block's, 32 and 32 * 256.
        var curved = Hw with { MmFlopsByRows = [(8, 1e12), (32, 3e12), (2048, 5e12), (8192, 6e12)], TaskSeconds = 1e-3 };
        double blockElements = 4.0 * 4096 * 4096 + 2.0 * 4096 * 16384, l = 32, bls = 32, s = 256;
        double attention = 4 * bls * (s + 16) * 4096 / Hw.BmmFlopsG;
        double prefillAttention = 4 * bls * s * s * 4096 / Hw.BmmFlopsP;
        double tasks = 1e-3 * (2 + 2 / l); // one GPU batch's layer tasks of a layer step

        var perBatch = Grouped(false, curved);
        var grouped = Grouped(true, curved);

        Near(2 * bls * blockElements / 1e12 + attention + 4 * tasks, perBatch.ComputeDecode.Evaluate(AllGpu));
        Near(2 * bls * blockElements / 3e12 + attention + tasks, grouped.ComputeDecode.Evaluate(AllGpu));
        Near(2 * bls * s * blockElements / 5e12 + prefillAttention + 4 * tasks, perBatch.ComputePrefill.Evaluate(AllGpu));
        Near(2 * bls * s * blockElements / 6e12 + prefillAttention + tasks, grouped.ComputePrefill.Evaluate(AllGpu));
    }

    [Fact]
    public void Grouped_batches_should_run_the_output_head_once_over_the_blocks_rows()
    {
        var curved = Hw with { MmFlopsByRows = [(8, 1e12), (32, 3e12)] };
        var shape = ModelShape.Of(ModelFamilies.FromPreset("opt-6.7b"));
        double HeadSeconds(bool grouped) =>
            Grouped(grouped, curved, shape).ComputeDecode.Evaluate(AllGpu) - Grouped(grouped, curved).ComputeDecode.Evaluate(AllGpu);

        // The head's share of a layer step: 2 * bls * (V * h / l) FLOPs at the rate of the rows computed together.
        Assert.True(shape.HeadWeightElements > 0);
        Near(2 * 32.0 * shape.HeadWeightElements / 32 / 3e12, HeadSeconds(true), 1e-6);
        Near(2 * 32.0 * shape.HeadWeightElements / 32 / 1e12, HeadSeconds(false), 1e-6);
    }

    [Fact]
    public void Grouped_batches_should_hold_every_gpu_batchs_working_activations_in_the_gpu_peaks()
    {
        var perBatch = Grouped(false, Hw);
        var grouped = Grouped(true, Hw);

        // All resident, the working terms left are the activations and the attended cache: per sequence computed at once.
        Assert.True(perBatch.GpuDecode.Working.Evaluate(AllGpu) > 0);
        Near(4 * perBatch.GpuDecode.Working.Evaluate(AllGpu), grouped.GpuDecode.Working.Evaluate(AllGpu));
        Near(4 * perBatch.GpuPrefill.Working.Evaluate(AllGpu), grouped.GpuPrefill.Working.Evaluate(AllGpu));
        Near(perBatch.GpuDecode.Home.Evaluate(AllGpu), grouped.GpuDecode.Home.Evaluate(AllGpu));
        Near(perBatch.CpuDecode.Bytes.Evaluate(AllGpu), grouped.CpuDecode.Bytes.Evaluate(AllGpu));
    }

    [Fact]
    public void Grouped_batches_should_keep_the_whole_cache_on_the_gpu_in_the_program()
    {
        var problem = OnT4("opt-1.3b", 256, 32) with { Engine = new EngineTerms(CpuCacheCompute: false) { GroupedBatches = true } };
        var block = new PlanBlock(8, 4);

        var solved = CostModel.Evaluate(problem, block);

        Assert.True(solved.Feasible);
        Near(1, solved.Placement![PlacementFraction.CacheGpu]);
        Assert.False(CostModel.Evaluate(problem, block, CacheCpu).Feasible);
    }

    [Fact]
    public void The_policys_engine_terms_should_group_by_the_engines_rule()
    {
        var config = ModelFamilies.FromPreset("opt-125m");
        var resident = FlexGen.Tensors.Policies.Policy.FromPercent([100, 0, 100, 0, 100, 0], 8, 4);
        var budgets = new PlanBudgets(1L << 40, 1L << 40, 1L << 40);

        Assert.True(PolicyCost.EngineTermsOf(config, resident, computesOnCpu: true, computeDtypeBytes: 4).GroupedBatches);
        Assert.False(PolicyCost.EngineTermsOf(config, resident, computesOnCpu: false, computeDtypeBytes: 2).GroupedBatches);
        Assert.False(PolicyCost.EngineTermsOf(config, FlexGen.Tensors.Policies.Policy.FromPercent([100, 0, 0, 100, 100, 0], 8, 4), computesOnCpu: true, computeDtypeBytes: 4).GroupedBatches);
        // An emulated GPU tier computes on the CPU.
        Assert.True(PolicyCost.ProblemOf(config, resident, 64, 16, budgets with { GpuInCpuMemory = true }, Hw, computeDtypeBytes: 4).Engine!.GroupedBatches);
        Assert.False(PolicyCost.ProblemOf(config, resident, 64, 16, budgets, Hw, computeDtypeBytes: 2).Engine!.GroupedBatches);
    }

    [Fact]
    public void The_weight_lookahead_should_hold_one_more_block_on_the_gpu_tier_only_without_sep_layer()
    {
        var block = new PlanBlock(8, 2);
        var onDisk = PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0]);
        var one = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true, SepLayer: false), block);
        var two = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true, SepLayer: false) { WeightLookahead = 2 }, block);
        Near(one.LayerWeightBytes, two.GpuDecode.Bytes.Evaluate(onDisk) - one.GpuDecode.Bytes.Evaluate(onDisk));
        Near(one.LayerWeightBytes, two.GpuPrefill.Bytes.Evaluate(onDisk) - one.GpuPrefill.Bytes.Evaluate(onDisk));
        // Weights homed on the GPU tier load nothing: the lookahead holds nothing more.
        var resident = PlanPlacement.FromPercent([100, 0, 100, 0, 100, 0]);
        Near(one.GpuDecode.Bytes.Evaluate(resident), two.GpuDecode.Bytes.Evaluate(resident));

        // With sep_layer three half-block layers fit in FlexLLMGen's two blocks.
        var sepOne = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true), block);
        var sepTwo = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true) { WeightLookahead = 2 }, block);
        Near(sepOne.GpuDecode.Bytes.Evaluate(onDisk), sepTwo.GpuDecode.Bytes.Evaluate(onDisk));

        // The policy's terms take the engine's lookahead: 2 computing on the CPU with overlap, else FlexGen's 1.
        var config = ModelFamilies.FromPreset("opt-1.3b");
        var policy = FlexGen.Tensors.Policies.Policy.FromPercent([0, 0, 100, 0, 100, 0], 8, 2);
        Assert.Equal(2, PolicyCost.EngineTermsOf(config, policy, computesOnCpu: true, computeDtypeBytes: 4).WeightLookahead);
        Assert.Equal(1, PolicyCost.EngineTermsOf(config, policy, computesOnCpu: false, computeDtypeBytes: 2).WeightLookahead);
        Assert.Equal(1, PolicyCost.EngineTermsOf(config, policy with { Overlap = false }, computesOnCpu: true, computeDtypeBytes: 4).WeightLookahead);
    }

    [Fact]
    public void The_pipelines_prefetch_steps_should_hold_the_layers_their_loads_reach_on_the_gpu_tier()
    {
        var config = ModelFamilies.FromPreset("opt-1.3b");
        var policy = FlexGen.Tensors.Policies.Policy.FromPercent([0, 0, 100, 0, 100, 0], 8, 1);
        EngineTerms Of(int steps, bool sepLayer = true) =>
            PolicyCost.EngineTermsOf(config, policy with { SepLayer = sepLayer }, computesOnCpu: true, computeDtypeBytes: 4, prefetchSteps: steps);

        // One GPU batch: P steps ahead are P layers ahead (PlacementPlan.WeightLookaheadOf), at least the CPU's 2.
        Assert.Equal([2, 2, 3, 5], new[] { 1, 2, 3, 5 }.Select(p => Of(p).WeightLookahead));
        // sep_layer: 1 + lookahead layers of a third (attention) and two thirds (MLP) of a block, at least FlexLLMGen's 2.
        Assert.Equal([2.0, 2.0, 2.0, 3.0], new[] { 1, 2, 3, 5 }.Select(p => Of(p).WeightLayersInFlight));
        Assert.Equal([3.0, 3.0, 4.0, 6.0], new[] { 1, 2, 3, 5 }.Select(p => Of(p, sepLayer: false).WeightLayersInFlight));

        // The GPU tier's peak holds them: a block's weights more at 5 steps than at 1, with the weights on disk.
        var onDisk = PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0]);
        var block = new PlanBlock(8, 1);
        var one = Terms("opt-1.3b", Of(1), block);
        var five = Terms("opt-1.3b", Of(5), block);
        Near(one.LayerWeightBytes, five.GpuDecode.Bytes.Evaluate(onDisk) - one.GpuDecode.Bytes.Evaluate(onDisk));
    }

    [Fact]
    public void Streamed_weights_on_an_emulated_gpu_should_cost_what_the_engine_does_with_them()
    {
        var onCpu = WeightsCpu;
        var onDisk = PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0]);
        var flexGen = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true));
        var sameWidth = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true) { GpuInCpuMemory = true });
        var widened = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true) { GpuInCpuMemory = true, ComputeWidensWeights = true });
        double load = flexGen.LayerWeightBytes / Hw.CtogBdw;

        // With CUDA (FlexLLMGen's model): a weight from the CPU or the disk crosses cpu->gpu.
        Near(load, flexGen.CtogDecode.Evaluate(onCpu));
        Near(load, flexGen.CtogDecode.Evaluate(onDisk));
        // GPU tier in CPU memory, weights kept in the compute dtype (bfloat16): a CPU weight is copied into its compute
        // buffer, a disk weight is read straight into it: no cpu->gpu time after the disk's.
        Near(load, sameWidth.CtogDecode.Evaluate(onCpu));
        Near(0, sameWidth.CtogDecode.Evaluate(onDisk));
        Near(flexGen.DtocDecode.Evaluate(onDisk), sameWidth.DtocDecode.Evaluate(onDisk));
        Near(flexGen.ComputeDecode.Evaluate(onDisk), sameWidth.ComputeDecode.Evaluate(onDisk));
        // Float32 compute over float16 weights: the compute widens every streamed weight before its matmuls, in both phases.
        foreach (var placement in new[] { onCpu, onDisk })
        {
            Near(0, widened.CtogDecode.Evaluate(placement));
            Near(0, widened.CtogPrefill.Evaluate(placement));
            Near(flexGen.ComputeDecode.Evaluate(placement) + load, widened.ComputeDecode.Evaluate(placement));
            Near(flexGen.ComputePrefill.Evaluate(placement) + load, widened.ComputePrefill.Evaluate(placement));
        }

        // Up to 8 rows a compute multiplies them as stored: its decode (8 x 2, a GPU batch's 8 rows) widens nothing, its
        // prefill still does; at 16 rows the decode widens too.
        var storedUpTo8 = new EngineTerms(CpuCacheCompute: true) { GpuInCpuMemory = true, ComputeWidensWeights = true, MultipliesStoredUpToRows = 8 };
        var asStored = Terms("opt-1.3b", storedUpTo8);
        Near(flexGen.ComputeDecode.Evaluate(onDisk), asStored.ComputeDecode.Evaluate(onDisk));
        Near(widened.ComputePrefill.Evaluate(onDisk), asStored.ComputePrefill.Evaluate(onDisk));
        var sixteenRows = new PlanBlock(16, 1);
        Near(Terms("opt-1.3b", widened.Problem.Engine, sixteenRows).ComputeDecode.Evaluate(onDisk),
            Terms("opt-1.3b", storedUpTo8, sixteenRows).ComputeDecode.Evaluate(onDisk));

        // Resident weights stream nothing.
        Near(flexGen.ComputeDecode.Evaluate(AllGpu), widened.ComputeDecode.Evaluate(AllGpu));
        // Compressed weights travel compressed (a CPU one copied up, a disk one read in) and are dequantized, not widened.
        var compressed = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true, CompressWeight: true));
        var compressedWidened = Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true, CompressWeight: true) { GpuInCpuMemory = true, ComputeWidensWeights = true });
        Near(compressed.CtogDecode.Evaluate(onCpu), compressedWidened.CtogDecode.Evaluate(onCpu));
        Near(0, compressedWidened.CtogDecode.Evaluate(onDisk));
        Near(compressed.ComputeDecode.Evaluate(onDisk), compressedWidened.ComputeDecode.Evaluate(onDisk));

        // The policy's terms: widened only computing on the CPU in a wider dtype than the model's.
        var config = ModelFamilies.FromPreset("opt-1.3b");
        var policy = FlexGen.Tensors.Policies.Policy.FromPercent([0, 0, 100, 0, 100, 0], 8, 1);
        Assert.True(PolicyCost.EngineTermsOf(config, policy, computesOnCpu: true, computeDtypeBytes: 4).ComputeWidensWeights);
        Assert.False(PolicyCost.EngineTermsOf(config, policy, computesOnCpu: true, computeDtypeBytes: 2).ComputeWidensWeights);
        Assert.False(PolicyCost.EngineTermsOf(config, policy, computesOnCpu: false, computeDtypeBytes: 4).ComputeWidensWeights);
        Assert.True(PolicyCost.EngineTermsOf(config, policy, computesOnCpu: true, computeDtypeBytes: 2).GpuInCpuMemory);
        Assert.Equal(LayerMath.MultipliesStoredUpToRows, PolicyCost.EngineTermsOf(config, policy, computesOnCpu: true, computeDtypeBytes: 4).MultipliesStoredUpToRows);
        Assert.Equal(0, PolicyCost.EngineTermsOf(config, policy, computesOnCpu: false, computeDtypeBytes: 4).MultipliesStoredUpToRows);
    }

    [Fact]
    public void A_compute_on_the_cpu_should_lose_the_profiles_share_of_its_rate_while_the_disk_reads_beside_it()
    {
        var onDisk = PlanPlacement.FromPercent([0, 0, 100, 0, 100, 0]);
        var shared = Hw with { MatmulShareWhileDiskReads = 0.6 };
        var onCpu = new EngineTerms(CpuCacheCompute: true) { GpuInCpuMemory = true };
        var terms = Terms("opt-1.3b", onCpu, hardware: shared);

        // A step whose reads take D beside a compute of C alone takes max(D, C + 0.4 D).
        Near(terms.ComputeDecode.Evaluate(onDisk) + 0.4 * terms.DtocDecode.Evaluate(onDisk), terms.ComputeBesideDiskReadsDecode!.Evaluate(onDisk));
        Near(terms.ComputePrefill.Evaluate(onDisk) + 0.4 * terms.DtocPrefill.Evaluate(onDisk), terms.ComputeBesideDiskReadsPrefill!.Evaluate(onDisk));
        var bound = Assert.Single(terms.DecodeBounds, b => b.Name.EndsWith(CostTerms.ComputeBesideDiskReads, StringComparison.Ordinal));
        Near(terms.CtogDecode.Evaluate(onDisk) + terms.ComputeBesideDiskReadsDecode!.Evaluate(onDisk), bound.Seconds.Evaluate(onDisk));
        Assert.Single(terms.PrefillBounds, b => b.Name == CostTerms.ComputeBesideDiskReads);
        // The bench's bounds show it where the disk reads, and only there.
        Assert.Equal(2, terms.StepTimes(onDisk).Count(t => t.Name == CostTerms.ComputeBesideDiskReads));
        Assert.DoesNotContain(terms.StepTimes(AllGpu), t => t.Name == CostTerms.ComputeBesideDiskReads);
        // The prediction: the same while the disk bounds the step (here C < 0.6 D) and for resident weights; slower where
        // the compute bounds it (a disk 1000x faster).
        var apart = Terms("opt-1.3b", onCpu);
        Assert.True(terms.ComputeDecode.Evaluate(onDisk) < 0.6 * terms.DtocDecode.Evaluate(onDisk));
        Near(CostModel.Predict(apart, onDisk).Throughput, CostModel.Predict(terms, onDisk).Throughput);
        Near(CostModel.Predict(apart, AllGpu).Throughput, CostModel.Predict(terms, AllGpu).Throughput);
        var fastDisk = Hw with { DtocBdw = 1000 * Hw.DtocBdw, MatmulShareWhileDiskReads = 0.6 };
        var computeBound = Terms("opt-1.3b", onCpu, hardware: fastDisk);
        var decode = CostModel.Predict(computeBound, onDisk).Decode!;
        Assert.EndsWith(CostTerms.ComputeBesideDiskReads, decode.BoundBy, StringComparison.Ordinal);
        Near(computeBound.CtogDecode.Evaluate(onDisk) + computeBound.ComputeDecode.Evaluate(onDisk) + 0.4 * computeBound.DtocDecode.Evaluate(onDisk),
            decode.SecondsPerStep);

        // Nothing shares: a GPU's compute, overlap off (nothing runs beside the compute), no share in the profile, or all of it.
        foreach (var none in new[]
                 {
                     Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true), hardware: shared),
                     Terms("opt-1.3b", new EngineTerms(CpuCacheCompute: true, Overlap: false) { GpuInCpuMemory = true }, hardware: shared),
                     apart,
                     Terms("opt-1.3b", onCpu, hardware: Hw with { MatmulShareWhileDiskReads = 1 }),
                     Terms("opt-1.3b", null, hardware: shared),
                 })
        {
            Assert.Null(none.ComputeBesideDiskReadsDecode);
            Assert.DoesNotContain(none.StepTimes(onDisk), t => t.Name == CostTerms.ComputeBesideDiskReads);
            Assert.DoesNotContain(none.DecodeBounds, b => b.Name.EndsWith(CostTerms.ComputeBesideDiskReads, StringComparison.Ordinal));
        }
    }

    /// <summary>opt-6.7b at 8 x 4 under the engine's terms, per GPU batch or grouped; without its output head unless <paramref name="shape"/> has one.</summary>
    private static CostTerms Grouped(bool grouped, HardwareProfile hardware, ModelShape? shape = null) =>
        new(OnT4("opt-6.7b", 256, 32) with
        {
            Hardware = hardware,
            Model = shape ?? ModelShape.Of(ModelFamilies.FromPreset("opt-6.7b")) with { HeadWeightElements = 0 },
            Engine = new EngineTerms(CpuCacheCompute: false) { GroupedBatches = grouped },
        }, new PlanBlock(8, 4));
}
