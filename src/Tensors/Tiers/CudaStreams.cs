namespace FlexGen.Tensors.Tiers;

using System.Runtime.InteropServices;

/// <summary>
/// CUDA streams for threads (TorchSharp has none): libtorch's C exports (<c>torch_get_cuda_stream_from_pool</c>,
/// <c>torch_set_current_cuda_stream</c>, <c>aoti_torch_*_cuda_stream_guard</c>, ...) resolved at run time from
/// <c>libtorch_cuda.so</c>, and CUDA events from <c>libcudart</c>. The current stream is per thread, so each
/// CUDA-touching actor sets its own on its pinned thread. Without CUDA nothing is resolved,
/// <see cref="IsAvailable"/> is false, <see cref="Status"/> says why, and <see cref="UseDedicatedStream"/> is a no-op.
/// </summary>
public static unsafe class CudaStreams
{
    private static readonly Lazy<Api?> LazyApi = new(Resolve);
    private static string _status = "not probed";

    /// <summary>True when CUDA is present and libtorch's stream exports were found.</summary>
    public static bool IsAvailable => LazyApi.Value is not null;

    /// <summary>True when, in addition, CUDA events (libcudart) can be used for cross-stream ordering.</summary>
    public static bool EventsAvailable => LazyApi.Value?.EventCreate is not null;

    /// <summary>Why streams are or are not available, for logs.</summary>
    public static string Status
    {
        get
        {
            _ = LazyApi.Value;
            return _status;
        }
    }

    /// <summary>A stream from libtorch's pool for <paramref name="deviceIndex"/>, or null when streams are unavailable.</summary>
    public static CudaStream? TryGetStreamFromPool(bool highPriority = false, int deviceIndex = 0)
    {
        var api = LazyApi.Value;
        if (api is null)
        {
            return null;
        }

        void* stream;
        Check(api.GetStreamFromPool(highPriority ? (byte)1 : (byte)0, deviceIndex, &stream), "torch_get_cuda_stream_from_pool");
        return new CudaStream((nint)stream, deviceIndex, api);
    }

    /// <summary>The calling thread's current stream on <paramref name="deviceIndex"/>, or null when streams are unavailable.</summary>
    public static CudaStream? TryGetCurrentStream(int deviceIndex = 0)
    {
        var api = LazyApi.Value;
        if (api is null)
        {
            return null;
        }

        void* stream;
        Check(api.GetCurrentStream(deviceIndex, &stream), "aoti_torch_get_current_cuda_stream");
        return new CudaStream((nint)stream, deviceIndex, api);
    }

    /// <summary>
    /// Makes a fresh pool stream current on the calling thread until the result is disposed (then the previous stream is
    /// restored). Without CUDA it does nothing and its <see cref="StreamScope.Stream"/> is null.
    /// </summary>
    public static StreamScope UseDedicatedStream(bool highPriority = false, int deviceIndex = 0)
    {
        var stream = TryGetStreamFromPool(highPriority, deviceIndex);
        return stream is null ? new StreamScope(null, 0, null) : stream.MakeCurrent();
    }

    internal static void Check(int error, string function)
    {
        if (error != 0)
        {
            throw new InvalidOperationException($"libtorch {function} failed (AOTI error {error}).");
        }
    }

    private static Api? Resolve()
    {
        try
        {
            if (!TorchRuntime.CudaAvailable)
            {
                _status = "CUDA streams unavailable: libtorch sees no CUDA device (copies and compute share one ordering).";
                return null;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or InvalidOperationException)
        {
            _status = $"CUDA streams unavailable: libtorch did not load ({e.Message}).";
            return null;
        }

        if (!NativeLibrary.TryLoad("libtorch_cuda.so", out var torchCuda))
        {
            _status = "CUDA streams unavailable: libtorch_cuda.so was not found on the library path.";
            return null;
        }

        string[] names = ["torch_get_cuda_stream_from_pool", "torch_set_current_cuda_stream", "torch_cuda_stream_synchronize",
            "aoti_torch_get_current_cuda_stream", "aoti_torch_create_cuda_stream_guard", "aoti_torch_delete_cuda_stream_guard"];
        var exports = new nint[names.Length];
        for (var i = 0; i < names.Length; i++)
        {
            if (!NativeLibrary.TryGetExport(torchCuda, names[i], out exports[i]))
            {
                _status = $"CUDA streams unavailable: libtorch_cuda.so does not export {names[i]} (libtorch older than 2.10?).";
                return null;
            }
        }

        var api = new Api
        {
            GetStreamFromPool = (delegate* unmanaged<byte, int, void**, int>)exports[0],
            SetCurrentStream = (delegate* unmanaged<void*, int, int>)exports[1],
            SynchronizeStream = (delegate* unmanaged<void*, int, int>)exports[2],
            GetCurrentStream = (delegate* unmanaged<int, void**, int>)exports[3],
            CreateGuard = (delegate* unmanaged<void*, int, void**, int>)exports[4],
            DeleteGuard = (delegate* unmanaged<void*, int>)exports[5],
        };

        foreach (var cudart in new[] { "libcudart.so.13", "libcudart.so.12", "libcudart.so" })
        {
            if (NativeLibrary.TryLoad(cudart, out var runtime)
                && NativeLibrary.TryGetExport(runtime, "cudaEventCreateWithFlags", out var create)
                && NativeLibrary.TryGetExport(runtime, "cudaEventRecord", out var record)
                && NativeLibrary.TryGetExport(runtime, "cudaStreamWaitEvent", out var wait)
                && NativeLibrary.TryGetExport(runtime, "cudaEventSynchronize", out var sync)
                && NativeLibrary.TryGetExport(runtime, "cudaEventDestroy", out var destroy))
            {
                api.EventCreate = (delegate* unmanaged<void**, uint, int>)create;
                api.EventRecord = (delegate* unmanaged<void*, void*, int>)record;
                api.StreamWaitEvent = (delegate* unmanaged<void*, void*, uint, int>)wait;
                api.EventSynchronize = (delegate* unmanaged<void*, int>)sync;
                api.EventDestroy = (delegate* unmanaged<void*, int>)destroy;
                break;
            }
        }

        _status = api.EventCreate is null
            ? "CUDA streams available (libtorch_cuda.so); CUDA events unavailable (libcudart not found): order streams with Synchronize."
            : "CUDA streams and events available (libtorch_cuda.so, libcudart).";
        return api;
    }

    internal sealed class Api
    {
        public delegate* unmanaged<byte, int, void**, int> GetStreamFromPool;
        public delegate* unmanaged<void*, int, int> SetCurrentStream;
        public delegate* unmanaged<void*, int, int> SynchronizeStream;
        public delegate* unmanaged<int, void**, int> GetCurrentStream;
        public delegate* unmanaged<void*, int, void**, int> CreateGuard;
        public delegate* unmanaged<void*, int> DeleteGuard;
        public delegate* unmanaged<void**, uint, int> EventCreate;
        public delegate* unmanaged<void*, void*, int> EventRecord;
        public delegate* unmanaged<void*, void*, uint, int> StreamWaitEvent;
        public delegate* unmanaged<void*, int> EventSynchronize;
        public delegate* unmanaged<void*, int> EventDestroy;
    }
}

/// <summary>A CUDA stream (libtorch-owned pool stream or the current stream); not disposed: the pool keeps it.</summary>
public sealed unsafe class CudaStream
{
    private readonly CudaStreams.Api _api;

    internal CudaStream(nint handle, int deviceIndex, CudaStreams.Api api)
    {
        Handle = handle;
        DeviceIndex = deviceIndex;
        _api = api;
    }

    /// <summary>The cudaStream_t.</summary>
    public nint Handle { get; }

    public int DeviceIndex { get; }

    /// <summary>Makes this the calling thread's current stream until the scope is disposed (the previous one is restored).</summary>
    public StreamScope MakeCurrent()
    {
        void* guard;
        CudaStreams.Check(_api.CreateGuard((void*)Handle, DeviceIndex, &guard), "aoti_torch_create_cuda_stream_guard");
        return new StreamScope(this, (nint)guard, _api);
    }

    /// <summary>Makes this the calling thread's current stream for good (for an actor's pinned thread).</summary>
    public void SetCurrentForThread() =>
        CudaStreams.Check(_api.SetCurrentStream((void*)Handle, DeviceIndex), "torch_set_current_cuda_stream");

    /// <summary>Blocks until all work queued on this stream has finished.</summary>
    public void Synchronize() =>
        CudaStreams.Check(_api.SynchronizeStream((void*)Handle, DeviceIndex), "torch_cuda_stream_synchronize");

    /// <summary>Records an event after the work queued so far (needs <see cref="CudaStreams.EventsAvailable"/>).</summary>
    public CudaEvent RecordEvent()
    {
        if (_api.EventCreate is null)
        {
            throw new InvalidOperationException("CUDA events are unavailable: libcudart was not found.");
        }

        void* handle;
        CheckCuda(_api.EventCreate(&handle, 0x2 /* cudaEventDisableTiming */), "cudaEventCreateWithFlags");
        var cudaEvent = new CudaEvent((nint)handle, _api);
        CheckCuda(_api.EventRecord(handle, (void*)Handle), "cudaEventRecord");
        return cudaEvent;
    }

    /// <summary>Makes later work on this stream wait for <paramref name="cudaEvent"/> without blocking the host.</summary>
    public void Wait(CudaEvent cudaEvent) =>
        CheckCuda(_api.StreamWaitEvent((void*)Handle, (void*)cudaEvent.Handle, 0), "cudaStreamWaitEvent");

    internal static void CheckCuda(int error, string function)
    {
        if (error != 0)
        {
            throw new InvalidOperationException($"CUDA {function} failed (cudaError {error}).");
        }
    }
}

/// <summary>A CUDA event recorded on a stream; destroyed on dispose.</summary>
public sealed unsafe class CudaEvent : IDisposable
{
    private readonly CudaStreams.Api _api;
    private nint _handle;

    internal CudaEvent(nint handle, CudaStreams.Api api)
    {
        _handle = handle;
        _api = api;
    }

    public nint Handle => _handle;

    /// <summary>Blocks until the work before the event has finished.</summary>
    public void Synchronize() => CudaStream.CheckCuda(_api.EventSynchronize((void*)_handle), "cudaEventSynchronize");

    public void Dispose()
    {
        var handle = Interlocked.Exchange(ref _handle, 0);
        if (handle != 0)
        {
            _api.EventDestroy((void*)handle);
        }
    }
}

/// <summary>While alive, a stream is the calling thread's current stream; disposing restores the previous one.</summary>
public sealed unsafe class StreamScope : IDisposable
{
    private readonly CudaStreams.Api? _api;
    private nint _guard;

    internal StreamScope(CudaStream? stream, nint guard, CudaStreams.Api? api)
    {
        Stream = stream;
        _guard = guard;
        _api = api;
    }

    /// <summary>The stream made current, or null when CUDA streams are unavailable (the scope then does nothing).</summary>
    public CudaStream? Stream { get; }

    public void Dispose()
    {
        var guard = Interlocked.Exchange(ref _guard, 0);
        if (guard != 0 && _api is not null)
        {
            CudaStreams.Check(_api.DeleteGuard((void*)guard), "aoti_torch_delete_cuda_stream_guard");
        }
    }
}
