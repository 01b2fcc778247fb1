namespace FlexGen.Tensors.Tiers;

/// <summary>Where a tiered tensor's bytes live (FlexGen's <c>DeviceType</c>).</summary>
public enum TierType
{
    /// <summary>GPU memory: the CUDA device, or CPU memory standing in for it when there is no CUDA.</summary>
    Gpu,

    /// <summary>Host memory (pinned when CUDA is present and the policy asks for it).</summary>
    Cpu,

    /// <summary>One file per tensor under the offload directory.</summary>
    Disk,

    /// <summary>Split along dim 1 into GPU, CPU and disk segments.</summary>
    Mixed,

    /// <summary>Group-quantized data + scales stored on a base tier.</summary>
    Compressed,
}
