namespace FlexGen.Tensors.Tiers;

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

/// <summary>Raw access to the bytes of contiguous CPU tensors, for file I/O straight into and out of tensor memory.</summary>
internal static unsafe class TensorMemory
{
    private static readonly Lazy<IntPtr?> DataExport = new(() =>
        LoadedLibrary.Exports(LoadedLibrary.Find("libLibTorchSharp"), "THSTensor_data") is [var data] ? data : null);

    /// <summary>True when TorchSharp's native data pointer (<c>THSTensor_data</c>) was found, so <see cref="Address"/> works.</summary>
    public static bool AddressAvailable => DataExport.Value is not null;

    /// <summary>
    /// The address of the tensor's first element, its storage offset included, whatever its strides (libtorch's data_ptr):
    /// one native call, no view made, for kernels called per layer. Needs <see cref="AddressAvailable"/>.
    /// </summary>
    public static void* Address(torch.Tensor tensor) =>
        ((delegate* unmanaged<IntPtr, void*>)(DataExport.Value ?? throw new InvalidOperationException("TorchSharp's THSTensor_data was not found.")))(tensor.Handle);

    /// <summary>Address of the first element of a contiguous CPU tensor (null for an empty one).</summary>
    public static byte* Pointer(torch.Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
        {
            throw new InvalidOperationException("Raw access needs a contiguous CPU tensor.");
        }

        if (tensor.NumberOfElements == 0)
        {
            return null;
        }

        // One-element view: its byte span starts at the tensor's first element, whatever the tensor's size.
        using var flat = tensor.view(-1);
        using var first = flat.narrow(0, 0, 1);
        var span = first.bytes;
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));
    }
}
