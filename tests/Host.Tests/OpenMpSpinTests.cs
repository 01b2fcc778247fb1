namespace FlexGen.Host.Tests;

using FlexGen.Host.Cli;

public class OpenMpSpinTests
{
    [Theory]
    [InlineData(true, null, null, null, true)]
    [InlineData(true, "", " ", null, true)]
    [InlineData(true, null, null, "1", true)] // not an opt-out value
    [InlineData(false, null, null, null, false)] // libtorch's OpenMP is libgomp on Linux only
    [InlineData(true, "30000", null, null, false)] // already set: no second restart
    [InlineData(true, "0", null, null, false)] // the user's count stands
    [InlineData(true, null, "PASSIVE", null, false)] // the user's wait policy stands
    [InlineData(true, null, "active", null, false)]
    [InlineData(true, null, null, "0", false)] // turned off
    [InlineData(true, null, null, "off", false)]
    public void ShouldSet_should_hold_on_linux_when_neither_count_nor_policy_is_set_and_not_turned_off(
        bool linux, string? spinCount, string? waitPolicy, string? optOut, bool expected)
    {
        Assert.Equal(expected, OpenMpSpin.ShouldSet(linux, spinCount, waitPolicy, optOut));
    }
}
