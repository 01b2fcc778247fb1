namespace FlexGen.Actors.Tests.Support;

using System.Collections.Immutable;

public static class Rows
{
    /// <summary>Jagged rows as the immutable rows the protocol carries.</summary>
    public static ImmutableArray<ImmutableArray<T>> ToRows<T>(this IEnumerable<IEnumerable<T>> rows) =>
        rows.Select(r => r.ToImmutableArray()).ToImmutableArray();
}
