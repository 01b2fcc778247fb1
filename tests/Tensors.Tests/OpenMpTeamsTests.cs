namespace FlexGen.Tensors.Tests;

using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Which threads run libtorch's OpenMP parallel regions (<see cref="OpenMpTeams"/>): real libgomp, real threads. A
/// libgomp worker takes its master thread's name, so a thread named here counts its own team in /proc.
/// </summary>
public class OpenMpTeamsTests
{
    // Large enough for libtorch to split it over its intra-op threads.
    private const long ParallelElements = 1 << 22;

    [Fact]
    public void OpenMpTeams_should_find_libtorchs_libgomp_on_linux()
    {
        Assert.Equal(OperatingSystem.IsLinux(), OpenMpTeams.Available);
    }

    [SkippableFact]
    public void KeepSerial_should_run_the_calling_threads_operations_alone_and_leave_other_threads_as_they_are()
    {
        Skip.IfNot(OpenMpTeams.Available, "libtorch's libgomp is loaded on Linux only");
        int processWide = torch.get_num_threads();
        var ((threadsHere, sum), named) = OnThread("omp-serial", () =>
        {
            OpenMpTeams.KeepSerial();
            using var total = torch.ones(ParallelElements).add(1).sum();
            return (OpenMpTeams.ThreadsHere, total.item<float>());
        });

        Assert.Equal(1, threadsHere);
        Assert.Equal(2f * ParallelElements, sum);
        Assert.Equal(1, named); // no worker was made for the thread
        Assert.Equal(processWide, torch.get_num_threads()); // libtorch's process-wide count is untouched
    }

    [SkippableFact]
    public void Release_should_end_the_team_the_calling_thread_made_and_leave_it_able_to_compute()
    {
        Skip.IfNot(OpenMpTeams.Available, "libtorch's libgomp is loaded on Linux only");
        Skip.If(torch.get_num_threads() < 2, "a team needs at least two intra-op threads");
        var ((before, after, again), _) = OnThread("omp-release", () =>
        {
            using (var made = torch.ones(ParallelElements).add(1)) { }
            int withTeam = ThreadsNamed("omp-release");
            OpenMpTeams.Release();
            int released = WaitFor(() => ThreadsNamed("omp-release"), count => count == 1);
            using var sum = torch.ones(ParallelElements).add(1).sum();
            return (withTeam, released, sum.item<float>());
        });

        Assert.True(before >= 2, $"the parallel operation made no worker ({before} thread(s) with the name)");
        Assert.Equal(1, after);
        Assert.Equal(2f * ParallelElements, again);
    }

    // Runs work on a new thread of that name (at most 15 characters, Linux's limit); gives its result and how many
    // threads bear the name just before it ends.
    private static (T Result, int Named) OnThread<T>(string name, Func<T> work)
    {
        T result = default!;
        int named = 0;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var scope = NewDisposeScope();
                result = work();
                named = ThreadsNamed(name);
            }
            catch (Exception e)
            {
                failure = e;
            }
        })
        { Name = name };
        thread.Start();
        thread.Join();
        if (failure is not null) throw new InvalidOperationException($"the work on thread {name} failed", failure);
        return (result, named);
    }

    private static int ThreadsNamed(string name) =>
        Directory.GetDirectories("/proc/self/task").Count(task => KernelFile.Read(Path.Combine(task, "comm"))?.Trim() == name);

    private static int WaitFor(Func<int> read, Func<int, bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        int value = read();
        while (!done(value) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
            value = read();
        }

        return value;
    }
}
