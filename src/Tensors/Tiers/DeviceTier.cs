namespace FlexGen.Tensors.Tiers;

using TorchSharp;

/// <summary>
/// A memory tier backed by torch tensors on one device: the GPU tier (the CUDA device, or CPU memory standing in
/// for it with its own budget when there is no CUDA) or the CPU tier (pinned when CUDA is present and asked for).
/// </summary>
public sealed class DeviceTier : MemoryTier
{
    private DeviceTier(string name, TierKind kind, torch.Device device, bool pinMemory, bool emulated, long capacityBytes)
        : base(name, kind, capacityBytes)
    {
        Device = device;
        PinMemory = pinMemory;
        IsEmulated = emulated;
    }

    /// <summary>The torch device that holds this tier's tensors.</summary>
    public torch.Device Device { get; }

    /// <summary>True when host tensors of this tier are page-locked (only with CUDA).</summary>
    public bool PinMemory { get; }

    /// <summary>True for a GPU tier emulated in CPU memory (no CUDA device).</summary>
    public bool IsEmulated { get; }

    /// <summary>The GPU tier: CUDA device 0 when libtorch sees one, otherwise CPU memory with its own accounting.</summary>
    public static DeviceTier CreateGpu(long capacityBytes = long.MaxValue, bool forceEmulated = false)
    {
        var cuda = !forceEmulated && TorchRuntime.CudaAvailable;
        return new DeviceTier("gpu", TierKind.Gpu, cuda ? torch.CUDA : torch.CPU, pinMemory: false, emulated: !cuda, capacityBytes);
    }

    /// <summary>The CPU tier; <paramref name="pinMemory"/> is honoured only when CUDA is present (pinning needs it).</summary>
    public static DeviceTier CreateCpu(long capacityBytes = long.MaxValue, bool pinMemory = false) =>
        new("cpu", TierKind.Cpu, torch.CPU, pinMemory && TorchRuntime.CudaAvailable, emulated: false, capacityBytes);

    public override DeviceTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null) =>
        Allocate(shape, dtype, name, pin: null);

    /// <summary>Allocates; <paramref name="pin"/> overrides the tier's pinning for this tensor (FlexGen pins 1-D weights always).</summary>
    public DeviceTensor Allocate(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name, bool? pin) =>
        Booked(shape.ToArray(), dtype, name, (dims, bytes) =>
        {
            if ((pin ?? PinMemory) && TorchRuntime.CudaAvailable && Device.type == DeviceType.CPU)
            {
                using var pageable = torch.empty(dims, dtype, Device);
                return pageable.pin_memory();
            }

            return Device.type == DeviceType.CPU && bytes >= AlignedAllocationBytes
                ? EmptyPageAligned(dims, dtype)
                : torch.empty(dims, dtype, Device);
        });

    /// <summary>
    /// A KV cache home: row-major (<see cref="AllocateRowMajorCache"/>) when <paramref name="rowMajorInCpuMemory"/> and this
    /// tier is CPU memory, else as <see cref="Allocate(ReadOnlySpan{long}, torch.ScalarType, string?)"/>.
    /// </summary>
    public DeviceTensor AllocateCache(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name, bool rowMajorInCpuMemory) =>
        rowMajorInCpuMemory && Device.type == DeviceType.CPU ? AllocateRowMajorCache(shape, dtype, name) : Allocate(shape, dtype, name);

    /// <summary>
    /// A (seq, rows, width) tensor of this CPU tier whose memory is ordered (rows, seq, width): a KV cache home that
    /// attention on the CPU reads row by row (each row's positions one run, not one <c>width</c> piece a position
    /// strided by rows x width). Indexing is FlexGen's (seq, rows, width) unchanged; only the strides differ.
    /// </summary>
    public DeviceTensor AllocateRowMajorCache(ReadOnlySpan<long> shape, torch.ScalarType dtype, string? name = null)
    {
        if (Device.type != DeviceType.CPU || shape.Length != 3)
        {
            throw new ArgumentException($"a row-major cache home is a 3-D tensor in CPU memory; {Name} is on {Device.type}, shape has {shape.Length} dims", nameof(shape));
        }

        return Booked(shape.ToArray(), dtype, name, (dims, _) =>
        {
            using var rowMajor = EmptyPageAligned([dims[1], dims[0], dims[2]], dtype); // (rows, seq, width)
            return rowMajor.permute(1, 0, 2); // (seq, rows, width), strides (width, seq * width, 1)
        });
    }

    /// <summary>
    /// Books the tensor's bytes on this tier, makes it (<paramref name="make"/> gets the shape and the bytes) and hands it
    /// out as this tier's; the booking is released when making fails.
    /// </summary>
    private DeviceTensor Booked(long[] shape, torch.ScalarType dtype, string? name, Func<long[], long, torch.Tensor> make)
    {
        name ??= DefaultName(Name);
        var bytes = TensorShapes.ElementCount(shape) * TensorShapes.ElementSize(dtype);
        Accounting.Reserve(bytes, name);
        try
        {
            var data = make(shape, bytes);
            // The tier's tensor outlives any dispose scope the caller has open.
            data.DetachFromDisposeScope();
            return new DeviceTensor(this, data, name, bytes);
        }
        catch
        {
            Accounting.Release(bytes);
            throw;
        }
    }

    /// <summary>Host tensors from this size on start on a 4 KiB boundary, so O_DIRECT transfers go straight into them.</summary>
    public const long AlignedAllocationBytes = 64 << 10;

    /// <summary>An uninitialised contiguous CPU tensor whose first element sits on a 4 KiB boundary (a view into a slightly larger buffer).</summary>
    private static unsafe torch.Tensor EmptyPageAligned(long[] shape, torch.ScalarType dtype)
    {
        var elementSize = TensorShapes.ElementSize(dtype);
        var count = TensorShapes.ElementCount(shape);
        using var raw = torch.empty([count + (NativeFile.Alignment / elementSize)], dtype, torch.CPU);
        // libtorch aligns host memory to 64 bytes, a multiple of every element size.
        var misalignment = (long)TensorMemory.Pointer(raw) % NativeFile.Alignment;
        var offset = misalignment == 0 ? 0 : (NativeFile.Alignment - misalignment) / elementSize;
        using var window = raw.narrow(0, offset, count);
        return window.view(shape);
    }

    /// <summary>
    /// Takes ownership of <paramref name="tensor"/> (e.g. a compute result) as a tensor of this tier; it is moved to this
    /// tier's device first when it lives elsewhere (the original is then disposed).
    /// </summary>
    public DeviceTensor Adopt(torch.Tensor tensor, string? name = null)
    {
        name ??= DefaultName(Name);
        var bytes = tensor.NumberOfElements * TensorShapes.ElementSize(tensor.dtype);
        Accounting.Reserve(bytes, name);
        try
        {
            var data = tensor;
            if (tensor.device.type != Device.type || !tensor.is_contiguous())
            {
                using (var moved = tensor.to(Device))
                {
                    data = moved.contiguous();
                }

                tensor.Dispose();
            }

            data.DetachFromDisposeScope();
            return new DeviceTensor(this, data, name, bytes);
        }
        catch
        {
            Accounting.Release(bytes);
            throw;
        }
    }

    /// <summary>Allocates a tensor of this tier holding a copy of <paramref name="source"/> (which stays the caller's).</summary>
    public DeviceTensor CopyOf(torch.Tensor source, string? name = null)
    {
        var result = Allocate(source.shape, source.dtype, name);
        try
        {
            result.Data.copy_(source);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }
}

/// <summary>A tensor of a GPU or CPU tier: an owned, contiguous torch tensor.</summary>
public sealed class DeviceTensor : TieredTensor
{
    private readonly long _bookedBytes;
    private readonly torch.Tensor _data;

    internal DeviceTensor(DeviceTier tier, torch.Tensor data, string name, long bookedBytes)
        : base(tier, data.shape, data.dtype, name)
    {
        _data = data;
        _bookedBytes = bookedBytes;
    }

    public new DeviceTier Tier => (DeviceTier)base.Tier;

    /// <summary>The torch tensor; owned by this object (do not dispose it; views of it are the caller's).</summary>
    public torch.Tensor Data
    {
        get
        {
            ThrowIfDisposed();
            return _data;
        }
    }

    protected override void ReleaseResources()
    {
        _data.Dispose();
        base.Tier.Accounting.Release(_bookedBytes);
    }
}
