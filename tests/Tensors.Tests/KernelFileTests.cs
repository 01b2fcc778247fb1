namespace FlexGen.Tensors.Tests;

public class KernelFileTests
{
    [Fact]
    public void KernelFile_should_give_a_files_text_and_null_where_there_is_none_or_it_cannot_be_read()
    {
        string folder = Path.Combine(Path.GetTempPath(), $"flexgen-kernel-file-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string file = Path.Combine(folder, "meminfo");
            File.WriteAllText(file, "MemAvailable:   23844656 kB\n");

            Assert.Equal("MemAvailable:   23844656 kB\n", KernelFile.Read(file));
            Assert.Null(KernelFile.Read(Path.Combine(folder, "missing")));
            Assert.Null(KernelFile.Read(folder)); // a folder is not a file: unreadable as text
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
