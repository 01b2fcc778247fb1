namespace FlexGen.Tensors.Compression;

/// <summary>
/// The arithmetic <see cref="GroupQuantizer.Compress"/> reproduces. FlexLLMGen compresses in the dtype and on the
/// device of the tensor it is given (<c>TorchCompressedDevice.compress</c>, which converts a float16 CPU tensor to
/// float32 first), so the same values quantize slightly differently depending on where they are compressed.
/// </summary>
public enum QuantizationArithmetic
{
    /// <summary>
    /// Float16, as on the GPU: inputs and every intermediate rounded to float16. FlexLLMGen compresses the KV cache
    /// this way (on the GPU, where attention produces it), and its compression fixtures were made this way.
    /// </summary>
    Float16,

    /// <summary>
    /// Float32, as on the CPU: FlexLLMGen compresses weights at load time this way (<c>TorchTensor.load_from_np</c>
    /// compresses the float16 file values on the global CPU device, which works in float32); only the stored
    /// (scale, min) pairs are rounded to float16, when they are copied into the float16 scale tensor.
    /// </summary>
    Float32,
}
