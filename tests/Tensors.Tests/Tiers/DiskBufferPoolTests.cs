namespace FlexGen.Tensors.Tests.Tiers;

using FlexGen.Tensors.Tiers;

[Collection(TierCollection.Name)]
public class DiskBufferPoolTests
{
    /// <summary>A transfer still running when the tier is disposed returns its bounce buffer afterwards: freed, not pooled.</summary>
    [Fact]
    public unsafe void Disk_tier_should_free_a_buffer_returned_after_it_was_disposed()
    {
        var directory = Directory.CreateTempSubdirectory("flexgen-pool-").FullName;
        try
        {
            var tier = new DiskTier(directory, new DiskTierSettings(IoThreads: 1) { ChunkBytes = 4096 });
            var pooled = tier.RentBuffer(4096);
            tier.ReturnBuffer(pooled, 4096);
            Assert.Equal(1, tier.PooledBufferCount);
            var buffer = tier.RentBuffer(4096);
            Assert.Equal(0, tier.PooledBufferCount);
            tier.Dispose();
            tier.ReturnBuffer(buffer, 4096);
            Assert.Equal(0, tier.PooledBufferCount);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
