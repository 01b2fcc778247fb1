namespace FlexGen.Actors.Schedule;

/// <summary>What one step of the block schedule does (FlexGen's model methods of the same names).</summary>
public enum TaskKind
{
    LoadWeight,
    LoadCache,
    LoadHidden,
    ComputeLayer,
    StoreCache,
    StoreHidden,
}

/// <summary>
/// One task of the block schedule: <see cref="Kind"/> at token <see cref="Token"/> (i, 0 = prefill),
/// layer <see cref="Layer"/> (j) and GPU batch <see cref="Batch"/> (k). Weight loads are per layer and
/// token, so their batch is always 0.
/// </summary>
public readonly record struct BlockTask(TaskKind Kind, int Token, int Layer, int Batch)
{
    public override string ToString() => $"{Kind}({Token},{Layer},{Batch})";
}

/// <summary>
/// A task at its place in the block order. <see cref="Step"/> is the index of the FlexGen loop iteration
/// (one (i, j, k) compute step) that issues it: with overlap, the loads for step s+1 and the stores of
/// step s-1 are issued in step s; the prologue is step -1 and the epilogue the step after the last.
/// </summary>
public readonly record struct ScheduledTask(BlockTask Task, int Step);
