namespace FlexGen.Tensors.Tests.Npy;

using System.Buffers.Binary;
using System.Text;
using TorchSharp;

/// <summary>A scratch directory deleted at dispose.</summary>
public sealed class ScratchDirectory : IDisposable
{
    public ScratchDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "flexgen-npy-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

public static class NpyTestSupport
{
    public static string Fixture(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    public static string ModelFile(string name) =>
        Path.Combine(AppContext.BaseDirectory, "models", "opt-tiny", name);

    /// <summary>Runs <paramref name="action"/> and asserts that it left no live tensor behind on this thread.</summary>
    public static void AssertNoTensorLeak(Action action)
    {
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        action();
        GC.KeepAlive(before);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    /// <summary>Same dtype, shape and bytes (NaNs included); disposes what it creates.</summary>
    public static bool SameTensor(torch.Tensor expected, torch.Tensor actual)
    {
        if (expected.dtype != actual.dtype || !expected.shape.SequenceEqual(actual.shape))
        {
            return false;
        }
        using var expectedDense = expected.contiguous();
        using var actualDense = actual.contiguous();
        return expectedDense.bytes.SequenceEqual(actualDense.bytes);
    }

    /// <summary>A hand-made .npy file: any version, any header text, any data bytes.</summary>
    public static byte[] HandMadeNpy(int major, string header, ReadOnlySpan<byte> data, bool pad = true)
    {
        var prefix = major == 1 ? 10 : 12;
        var text = header;
        if (pad)
        {
            var total = (prefix + text.Length + 1 + 63) / 64 * 64;
            text = text.PadRight(total - prefix - 1) + "\n";
        }
        var headerBytes = major == 3 ? Encoding.UTF8.GetBytes(text) : Encoding.Latin1.GetBytes(text);
        var bytes = new byte[prefix + headerBytes.Length + data.Length];
        new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0 }.CopyTo(bytes, 0);
        if (major == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)headerBytes.Length);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)headerBytes.Length);
        }
        headerBytes.CopyTo(bytes, prefix);
        data.CopyTo(bytes.AsSpan(prefix + headerBytes.Length));
        return bytes;
    }
}
