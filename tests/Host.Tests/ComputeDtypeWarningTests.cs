namespace FlexGen.Host.Tests;

using FlexGen.Host.Hosting;
using FlexGen.Tensors;
using static TorchSharp.torch;

/// <summary>
/// A bfloat16 compute on a CPU that has no bfloat16 instructions and no MKL bfloat16 GEMM to multiply through is run, with a
/// warning that says what to use instead.
/// </summary>
public class ComputeDtypeWarningTests
{
    [Fact]
    public void A_bfloat16_compute_should_be_warned_of_only_on_a_cpu_known_to_emulate_it_without_mkl()
    {
        string? warning = FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, cudaAvailable: false, cpuMultipliesBFloat16: false, throughMkl: false);

        Assert.NotNull(warning);
        Assert.StartsWith("warning: this CPU has no bfloat16 matrix instructions", warning);
        Assert.Contains("--compute-dtype float32", warning);
        Assert.Null(FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, cudaAvailable: false, cpuMultipliesBFloat16: true, throughMkl: false));
        Assert.Null(FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, cudaAvailable: false, cpuMultipliesBFloat16: null, throughMkl: false));
        Assert.Null(FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, cudaAvailable: true, cpuMultipliesBFloat16: false, throughMkl: false));
        Assert.Null(FlexGenSetup.ComputeDtypeWarning(ScalarType.Float32, cudaAvailable: false, cpuMultipliesBFloat16: false, throughMkl: false));
        // MKL multiplies bfloat16 at about float32's rate: nothing to warn of.
        Assert.Null(FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, cudaAvailable: false, cpuMultipliesBFloat16: false, throughMkl: true));
    }

    [Fact]
    public void FlexGenSetup_should_say_the_warning_for_this_machine_and_still_set_up_the_run()
    {
        var heard = new List<string>();

        var setup = FlexGenSetup.Create(new FlexGenOptions { Model = TestPaths.BundledModel, ComputeDtype = "bfloat16" }, say: heard.Add);

        Assert.Equal(ScalarType.BFloat16, setup.ComputeDtype);
        var expected = FlexGenSetup.ComputeDtypeWarning(ScalarType.BFloat16, TorchRuntime.CudaAvailable, TorchRuntime.CpuMultipliesBFloat16,
            TorchRuntime.CpuBFloat16ThroughMkl);
        Assert.Equal(expected is null ? [] : [expected], heard);
    }
}
