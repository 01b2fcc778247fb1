namespace FlexGen.Host.Cli;

/// <summary>
/// How long libtorch's OpenMP workers (libgomp) spin for the next parallel region before they sleep:
/// <c>GOMP_SPINCOUNT=30000</c>, about 0.3 ms, against libgomp's default of about 3 ms. With the parallel regions kept on
/// the compute thread (<see cref="Tensors.OpenMpTeams"/>) the worker spins its full count after every region; through
/// a layer's operations (microseconds apart) it should, but between the pipeline's parts it held a core the coordinator
/// and the copy actor were waiting for. On the 2-core VM, OPT-125m float32, alternating builds: 8 x 1 decode 107.6-112.6
/// token/s against 78.5-93.3 at the default count (81.4-86.7 before the teams were kept together), 8 x 4 203-259 against
/// 200-235; a count of 3000 let the vCPUs halt between regions and the hypervisor's steal rose to 11-12% (decode 106-116
/// at 8 x 4). Read by libgomp when it loads, so set at process start (<see cref="StartupEnvironment"/>); a
/// <c>GOMP_SPINCOUNT</c> or <c>OMP_WAIT_POLICY</c> already set is the user's choice and stands; <c>FLEXGEN_OMP_SPIN=0</c>
/// turns it off.
/// </summary>
public static class OpenMpSpin
{
    /// <summary>libgomp's variable for the spin count.</summary>
    public const string SpinCountVariable = "GOMP_SPINCOUNT";

    /// <summary>OpenMP's wait policy (ACTIVE or PASSIVE), which sets libgomp's spin count when the count is not given.</summary>
    public const string WaitPolicyVariable = "OMP_WAIT_POLICY";

    /// <summary>The environment variable that turns the setting off: 0, false, no or off (<see cref="StartupEnvironment.IsOff"/>).</summary>
    public const string OptOutVariable = "FLEXGEN_OMP_SPIN";

    /// <summary>The count set.</summary>
    public const string SpinCount = "30000";

    /// <summary>True when this process runs with the count set here.</summary>
    public static bool Active => Environment.GetEnvironmentVariable(SpinCountVariable) == SpinCount;

    /// <summary>The <c>GOMP_SPINCOUNT</c> this process should restart with, or null (<see cref="ShouldSet"/>).</summary>
    public static string? SpinCountToSet() =>
        ShouldSet(OperatingSystem.IsLinux(), Environment.GetEnvironmentVariable(SpinCountVariable),
            Environment.GetEnvironmentVariable(WaitPolicyVariable), Environment.GetEnvironmentVariable(OptOutVariable))
            ? SpinCount
            : null;

    /// <summary>
    /// The rule: on Linux (libtorch's OpenMP is libgomp there), neither the spin count nor the wait policy set (after the
    /// restart the count is), and not turned off.
    /// </summary>
    public static bool ShouldSet(bool linux, string? spinCount, string? waitPolicy, string? optOut) =>
        linux && string.IsNullOrWhiteSpace(spinCount) && string.IsNullOrWhiteSpace(waitPolicy) && !StartupEnvironment.IsOff(optOut);
}
