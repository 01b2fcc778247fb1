namespace FlexGen.Host.Tests;

using FlexGen.Tensors.Planning;

public class ProfileCommandTests
{
    [Fact]
    public async Task Profile_should_write_a_hardware_file_that_plan_reads_with_a_line_per_constant()
    {
        using var folder = new TempFolder();
        string file = folder.File("hw.json");

        var result = await CliRunner.RunAsync("profile", "--output", file, "--offload-dir", folder.Path, "--size-mb", "4", "--seconds", "0.01");

        Assert.True(result.ExitCode == 0, result.ToString());
        var profile = HardwareProfile.Read(file); // every key, rates positive
        Assert.Equal(HardwareProfile.DefaultCorrection, (profile.C1, profile.C2, profile.C3));
        foreach (var name in HardwareProfile.JsonNames.Take(12)) Assert.Contains(name, result.Error);
        // The compute's share beside the disk's reads, measured against the same layer alone.
        Assert.InRange(profile.MatmulShareWhileDiskReads!.Value, 0.01, 1);
        Assert.Contains("mm_share_dtoc", result.Error);
        Assert.InRange(profile.DiskShareWhileComputing!.Value, 0.01, 1);
        Assert.Contains("dtoc_share_mm", result.Error);
        // The disk's rates are sustained over distinct transfers (a re-read one came from the host's cache).
        var lines = result.Error.Split('\n');
        foreach (var name in new[] { "ctod_bdw_cache_p", "dtoc_bdw" })
        {
            Assert.Contains("8 x 4 MiB distinct", Assert.Single(lines, l => l.TrimStart().StartsWith(name + " ", StringComparison.Ordinal)));
        }

        Assert.Equal(8 * 4 << 20, profile.DiskSpanBytes); // the span those rates hold for, which bench compares with a run's reads

        Assert.Equal(["hw.json"], Directory.GetFileSystemEntries(folder.Path).Select(Path.GetFileName)); // no scratch left

        var plan = await CliRunner.RunAsync("plan", "--model", "opt-125m", "--prompt-len", "64", "--gen-len", "8", "--gpu-mem", "1",
            "--cpu-mem", "4", "--disk-mem", "10", "--hardware", file, "--json");
        Assert.True(plan.ExitCode == 0, plan.ToString());
    }

    [Fact]
    public async Task A_bfloat16_profile_on_the_cpu_should_time_matmuls_in_bfloat16_and_decode_attention_over_its_bfloat16_cache()
    {
        using var folder = new TempFolder();
        string file = folder.File("hw.json");

        var result = await CliRunner.RunAsync("profile", "--compute-dtype", "bfloat16", "--output", file, "--offload-dir", folder.Path,
            "--size-mb", "4", "--seconds", "0.01");

        Assert.True(result.ExitCode == 0, result.ToString());
        var lines = result.Error.Split('\n');
        string Line(string name) => Assert.Single(lines, l => l.TrimStart().StartsWith(name + " ", StringComparison.Ordinal));
        // The engine's projections compute in the compute dtype; its prefill attention on the CPU in float32
        // (AttentionCompute); its decode attention, with AVX2 and FMA, in CpuDecodeAttention over the bfloat16 cache a
        // bfloat16 compute keeps, else as libtorch's float32 products.
        foreach (var name in new[] { "mm_flops_p", "mm_flops_g" }) Assert.Contains("BFloat16 on", Line(name));
        Assert.Contains("Float32 (attention's dtype) on", Line("bmm_flops_p"));
        bool kernel = System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;
        foreach (var name in new[] { "bmm_flops_g", "cpu_flops" })
        {
            Assert.Contains(kernel ? "BFloat16 cache, row by row on" : "Float32 (attention's dtype) on", Line(name));
        }
    }

    [Fact]
    public async Task Profile_should_refuse_a_compute_thread_count_out_of_range_before_measuring()
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync("profile", "--output", folder.File("hw.json"), "--offload-dir", folder.Path, "--compute-threads", "0");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--compute-threads 0", result.Error);
        Assert.Empty(Directory.GetFileSystemEntries(folder.Path));
    }

    [Fact]
    public async Task Profile_should_sustain_the_disk_rates_over_the_span_given()
    {
        using var folder = new TempFolder();
        string file = folder.File("hw.json");

        var result = await CliRunner.RunAsync("profile", "--output", file, "--offload-dir", folder.Path, "--size-mb", "64",
            "--disk-span-gb", "1", "--seconds", "0.01");

        Assert.True(result.ExitCode == 0, result.ToString());
        var lines = result.Error.Split('\n');
        foreach (var name in new[] { "ctod_bdw_cache_p", "dtoc_bdw" })
        {
            Assert.Contains("16 x 64 MiB distinct", Assert.Single(lines, l => l.TrimStart().StartsWith(name + " ", StringComparison.Ordinal)));
        }

        Assert.Equal(["hw.json"], Directory.GetFileSystemEntries(folder.Path).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1025")]
    public async Task Profile_should_refuse_a_disk_span_out_of_range_before_measuring(string gib)
    {
        using var folder = new TempFolder();

        var result = await CliRunner.RunAsync("profile", "--output", folder.File("hw.json"), "--offload-dir", folder.Path, "--disk-span-gb", gib);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"--disk-span-gb {gib}", result.Error);
        Assert.Empty(Directory.GetFileSystemEntries(folder.Path));
    }

    [Fact]
    public void A_profile_should_survive_its_json_round_trip()
    {
        var profile = new HardwareProfile
        {
            CtogBdw = 13840532111.36, GtocBdwCache = 1041529569.28, GtocBdwHidden = 5175435591.68, DtocBdw = 507879882.752,
            CtodBdwCacheP = 801011400.704, CtodBdwHiddenP = 2163589775.36, CtodBdwG = 2163589775.36, MmFlopsP = 21.24e12,
            MmFlopsG = 4.3e12, BmmFlopsP = 9.97e12, BmmFlopsG = 79e9, CpuFlops = 12.3e9, C1 = 0.0168, C2 = 0.0328, C3 = 0.0621,
        };
        Assert.Equal(profile, HardwareProfile.Parse(profile.ToJson(), "round trip"));
    }
}
