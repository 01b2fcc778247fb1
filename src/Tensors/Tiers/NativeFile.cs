namespace FlexGen.Tensors.Tiers;

using System.Runtime.InteropServices;

/// <summary>
/// Positional file I/O through libc (open/pread/pwrite) so the disk tier can use O_DIRECT, which .NET's FileStream
/// does not expose. Every call reports failures as <see cref="DiskTierIOException"/> naming the file.
/// </summary>
internal static unsafe partial class NativeFile
{
    public const int Alignment = 4096;

    private const int ORdOnly = 0x0;
    private const int OWrOnly = 0x1;
    private const int ORdWr = 0x2;
    private const int OCreat = 0x40;
    private const int OTrunc = 0x200;
    private const int OCloexec = 0x80000;
    private const int Eintr = 4;

    /// <summary>O_DIRECT differs between architectures.</summary>
    private static int ODirect => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x10000 : 0x4000;

    public static bool DirectIoSupportedOnPlatform => OperatingSystem.IsLinux();

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysOpen(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int SysClose(int fd);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint SysPread(int fd, void* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    private static partial nint SysPwrite(int fd, void* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int SysFtruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int SysFallocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int SysFsync(int fd);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int SysFadvise(int fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "strerror")]
    private static partial nint SysStrerror(int errnum);

    public static string Describe(int errno) => Marshal.PtrToStringUTF8(SysStrerror(errno)) ?? $"errno {errno}";

    /// <summary>
    /// Creates (or truncates) <paramref name="path"/> and sets its length; with <paramref name="reserve"/>, reserves the
    /// blocks now (fallocate), so a full disk shows at allocation, not in the middle of a run, and writes skip block
    /// allocation. File systems without fallocate get a sparse file.
    /// </summary>
    public static void Create(string path, long length, bool reserve)
    {
        var fd = Open(path, OWrOnly | OCreat | OTrunc, direct: false, "create");
        try
        {
            if (reserve && length > 0 && SysFallocate(fd, 0, 0, length) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno != 95 /* EOPNOTSUPP */)
                {
                    throw Failure(path, "allocation", errno);
                }
            }

            if (SysFtruncate(fd, length) != 0)
            {
                throw Failure(path, "resize", Marshal.GetLastPInvokeError());
            }
        }
        finally
        {
            SysClose(fd);
        }
    }

    /// <summary>Opens for reading or writing; with <paramref name="direct"/>, returns -1 when the file system refuses O_DIRECT.</summary>
    public static int Open(string path, bool write, bool direct)
    {
        var flags = write ? ORdWr : ORdOnly;
        return Open(path, flags, direct, write ? "open for writing" : "open for reading");
    }

    private static int Open(string path, int flags, bool direct, string operation)
    {
        var fd = SysOpen(path, flags | OCloexec | (direct ? ODirect : 0), 0x180 /* 0600: the files hold the model's weights and the prompts' KV cache */);
        if (fd >= 0)
        {
            return fd;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (direct && errno == 22 /* EINVAL: the file system does not do O_DIRECT */)
        {
            return -1;
        }

        throw Failure(path, operation, errno);
    }

    public static void Close(int fd) => SysClose(fd);

    /// <summary>Flushes the file's dirty pages to the device, then drops its pages from the page cache.</summary>
    public static void FlushAndDropCache(string path)
    {
        var fd = Open(path, write: true, direct: false);
        try
        {
            if (SysFsync(fd) != 0)
            {
                throw Failure(path, "fsync", Marshal.GetLastPInvokeError());
            }

            SysFadvise(fd, 0, 0, 4 /* POSIX_FADV_DONTNEED */);
        }
        finally
        {
            SysClose(fd);
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes at <paramref name="offset"/>, or throws.</summary>
    public static void ReadExactly(int fd, string path, byte* buffer, long count, long offset) =>
        TransferExactly(fd, path, buffer, count, offset, write: false);

    /// <summary>Writes exactly <paramref name="count"/> bytes at <paramref name="offset"/>, or throws (ENOSPC: disk full).</summary>
    public static void WriteExactly(int fd, string path, byte* buffer, long count, long offset) =>
        TransferExactly(fd, path, buffer, count, offset, write: true);

    /// <summary>pread/pwrite in chunks of at most 1 GiB until all is moved, retrying on EINTR.</summary>
    private static void TransferExactly(int fd, string path, byte* buffer, long count, long offset, bool write)
    {
        while (count > 0)
        {
            var chunk = (nuint)Math.Min(count, 1L << 30);
            var n = write ? SysPwrite(fd, buffer, chunk, offset) : SysPread(fd, buffer, chunk, offset);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == Eintr)
                {
                    continue;
                }

                throw Failure(path, write ? "write" : "read", errno);
            }

            if (n == 0)
            {
                throw write
                    ? new DiskTierIOException(path, "write", 28, "no bytes written (disk full)")
                    : new DiskTierIOException(path, "read", 0, $"the file ends {count:N0} bytes before offset {offset + count:N0} (truncated)");
            }

            buffer += n;
            offset += n;
            count -= n;
        }
    }

    private static DiskTierIOException Failure(string path, string operation, int errno) =>
        new(path, operation, errno, errno switch
        {
            28 => "no space left on the device (disk full)",
            27 => "the file is larger than the file-size limit allows",
            _ => Describe(errno),
        });

    public static long AlignDown(long value) => value & ~(long)(Alignment - 1);

    public static long AlignUp(long value) => (value + Alignment - 1) & ~(long)(Alignment - 1);

    public static bool IsAligned(long value) => (value & (Alignment - 1)) == 0;
}
