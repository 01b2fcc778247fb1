namespace FlexGen.Tensors.Tests.Planning;

using Google.OrTools.LinearSolver;

/// <summary>OR-Tools' native library loads on this machine and GLOP solves: the planner's one dependency.</summary>
public class GlopRuntimeTests
{
    [Fact]
    public void Glop_should_solve_a_two_variable_program()
    {
        using var solver = Solver.CreateSolver("GLOP");
        Assert.NotNull(solver);
        var x = solver.MakeNumVar(0, double.PositiveInfinity, "x");
        var y = solver.MakeNumVar(0, double.PositiveInfinity, "y");
        var first = solver.MakeConstraint(double.NegativeInfinity, 4);
        first.SetCoefficient(x, 1);
        first.SetCoefficient(y, 2);
        var second = solver.MakeConstraint(double.NegativeInfinity, 6);
        second.SetCoefficient(x, 3);
        second.SetCoefficient(y, 1);
        var objective = solver.Objective();
        objective.SetCoefficient(x, 1);
        objective.SetCoefficient(y, 1);
        objective.SetMaximization();

        Assert.Equal(Solver.ResultStatus.OPTIMAL, solver.Solve());

        Assert.Equal(1.6, x.SolutionValue(), 9);
        Assert.Equal(1.2, y.SolutionValue(), 9);
        Assert.Equal(2.8, objective.Value(), 9);
    }
}
