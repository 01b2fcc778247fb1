namespace FlexGen.Tensors;

using TorchSharp;

/// <summary>Facts about the loaded libtorch that the rest of the code asks for in one place.</summary>
public static class TorchRuntime
{
    /// <summary>True when libtorch sees a CUDA device.</summary>
    public static bool CudaAvailable => torch.cuda.is_available();
}
