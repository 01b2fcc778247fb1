namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>The disk tier's files hold the model's weights and the prompts' KV cache: readable by their owner only.</summary>
[Collection(TierCollection.Name)]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class OffloadFileModeTests
{
    [Fact]
    public void Disk_tier_files_should_be_readable_and_writable_by_their_owner_only()
    {
        var directory = Directory.CreateTempSubdirectory("flexgen-mode-").FullName;
        try
        {
            using var disk = new DiskTier(directory);
            using var tensor = disk.Allocate([1024], ScalarType.Float16, "weights");
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(tensor.Path));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
