namespace FlexGen.Tensors.Tests;

/// <summary>Whether the CPU multiplies bfloat16 in hardware, read from /proc/cpuinfo texts of real machines.</summary>
public class CpuBFloat16Tests
{
    // Abridged /proc/cpuinfo of the 2-core AVX2 EPYC (Zen 3) VM these numbers were measured on: no bfloat16 instructions.
    private const string Zen3 = """
        processor	: 0
        vendor_id	: AuthenticAMD
        cpu family	: 25
        model name	: AMD EPYC
        flags		: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 vaes vpclmulqdq
        bogomips	: 4890.84

        processor	: 1
        flags		: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 vaes vpclmulqdq
        """;

    // A Zen 4 EPYC lists avx512_bf16.
    private const string Zen4 = """
        processor	: 0
        vendor_id	: AuthenticAMD
        flags		: fpu sse sse2 avx f16c avx2 avx512f avx512dq avx512_bf16 avx512vl
        """;

    // A Sapphire Rapids Xeon lists amx_bf16 (and avx512_bf16).
    private const string SapphireRapids = """
        processor	: 0
        vendor_id	: GenuineIntel
        flags		: fpu sse avx2 avx512f amx_bf16 amx_tile amx_int8
        """;

    // An arm64 Neoverse V1 (Graviton 3) lists bf16 in Features.
    private const string Graviton3 = """
        processor	: 0
        BogoMIPS	: 2100.00
        Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm sve bf16 i8mm
        CPU implementer	: 0x41
        """;

    [Fact]
    public void A_cpuinfo_should_tell_whether_the_cpu_multiplies_bfloat16()
    {
        Assert.False(TorchRuntime.HasBFloat16MatrixInstructions(Zen3));
        Assert.True(TorchRuntime.HasBFloat16MatrixInstructions(Zen4));
        Assert.True(TorchRuntime.HasBFloat16MatrixInstructions(SapphireRapids));
        Assert.True(TorchRuntime.HasBFloat16MatrixInstructions(Graviton3));
        // A flag that only contains the name is not the flag.
        Assert.False(TorchRuntime.HasBFloat16MatrixInstructions("flags\t: avx2 xbf16 avx512_bf16x\n"));
    }

    [Fact]
    public void CpuInfo_should_give_the_first_processors_line_and_value_of_a_field()
    {
        Assert.Equal("vendor_id\t: AuthenticAMD", CpuInfo.Line(Zen3, "vendor_id"));
        Assert.Equal("AuthenticAMD", CpuInfo.Value(Zen3, "vendor_id"));
        Assert.Equal("AMD EPYC", CpuInfo.Value(Zen3, "model name"));
        Assert.StartsWith("fpu vme de", CpuInfo.Value(Zen3, "flags"));
        Assert.Null(CpuInfo.Line(Zen3, "Features"));
        Assert.Null(CpuInfo.Value(Graviton3, "vendor_id"));
    }

    [Fact]
    public void A_cpuinfo_without_flags_should_tell_nothing()
    {
        Assert.Null(TorchRuntime.HasBFloat16MatrixInstructions(""));
        Assert.Null(TorchRuntime.HasBFloat16MatrixInstructions("processor\t: 0\nmodel name\t: AMD EPYC\n"));
    }

    [Fact]
    public void This_machines_answer_should_be_what_its_cpuinfo_says()
    {
        bool? expected = OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
            ? TorchRuntime.HasBFloat16MatrixInstructions(File.ReadAllText("/proc/cpuinfo"))
            : null;
        Assert.Equal(expected, TorchRuntime.CpuMultipliesBFloat16);
    }
}
