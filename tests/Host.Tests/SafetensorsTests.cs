namespace FlexGen.Host.Tests;

using System.Buffers.Binary;
using System.Text;
using FlexGen.Host.Checkpoints;
using TorchSharp;

public class SafetensorsTests
{
    [Theory]
    [InlineData(torch.ScalarType.Float16, "F16")]
    [InlineData(torch.ScalarType.BFloat16, "BF16")]
    [InlineData(torch.ScalarType.Float32, "F32")]
    [InlineData(torch.ScalarType.Int64, "I64")]
    public void Writer_and_reader_should_round_trip_values_dtype_and_shape(torch.ScalarType dtype, string name)
    {
        using var folder = new TempFolder();
        using var a = torch.randn(3, 5).mul(10).to_type(dtype);
        using var b = torch.arange(7).to_type(dtype);
        SafetensorsWriter.Write(folder.File("x.safetensors"), [new("a", a), new("b.bias", b)]);

        using var file = SafetensorsFile.Open(folder.File("x.safetensors"));
        Assert.Equal(name, file.GetEntry("a").Dtype);
        Assert.Equal([3L, 5L], file.GetEntry("a").Shape);
        using var readA = file.Read("a");
        using var readB = file.Read("b.bias");
        Assert.Equal(dtype, readA.dtype);
        Assert.True(readA.eq(a).all().item<bool>());
        Assert.True(readB.eq(b).all().item<bool>());
    }

    [Fact]
    public void Reader_should_refuse_a_header_length_past_the_end_of_the_file()
    {
        using var folder = new TempFolder();
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1000);
        File.WriteAllBytes(folder.File("bad.safetensors"), bytes);
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(folder.File("bad.safetensors")));
        Assert.Contains("bad.safetensors", ex.Message);
        Assert.Contains("header length 1000", ex.Message);
    }

    [Theory]
    [InlineData("{\"w\": {\"dtype\": \"F16\", \"shape\": [2, 2], \"data_offsets\": [0, 6]}}", "need 8")]
    [InlineData("{\"w\": {\"dtype\": \"F16\", \"shape\": [2, 2], \"data_offsets\": [0, 800]}}", "past the data section")]
    [InlineData("{\"w\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 2]}}", "unsupported dtype 'Q4'")]
    [InlineData("{\"w\": {\"shape\": [2], \"data_offsets\": [0, 2]}}", "'dtype'")]
    [InlineData("{not json", "not valid JSON")]
    public void Reader_should_name_the_tensor_and_rule_of_a_malformed_header(string header, string expected)
    {
        using var folder = new TempFolder();
        string path = folder.File("m.safetensors");
        WriteRaw(path, header, dataBytes: 8);
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path));
        Assert.Contains(expected, ex.Message);
        Assert.Contains("m.safetensors", ex.Message);
    }

    [Fact]
    public void Checkpoint_should_find_tensors_across_shards_of_an_index()
    {
        using var folder = new TempFolder();
        using var a = torch.ones(2, 3, dtype: torch.ScalarType.Float16);
        using var b = torch.zeros(4, dtype: torch.ScalarType.Float32);
        SafetensorsWriter.Write(folder.File("model-00001-of-00002.safetensors"), [new("a", a)]);
        SafetensorsWriter.Write(folder.File("model-00002-of-00002.safetensors"), [new("b", b)]);
        SafetensorsWriter.WriteIndex(folder.File(SafetensorsCheckpoint.IndexFileName),
            new Dictionary<string, string> { ["a"] = "model-00001-of-00002.safetensors", ["b"] = "model-00002-of-00002.safetensors" }, 28);

        using var checkpoint = SafetensorsCheckpoint.Open(folder.Path);
        Assert.Equal(2, checkpoint.ShardCount);
        using var readB = checkpoint.Read("b");
        Assert.Equal(torch.ScalarType.Float32, readB.dtype);
        Assert.Equal([4L], readB.shape);
    }

    [Fact]
    public void Checkpoint_should_name_a_missing_shard()
    {
        using var folder = new TempFolder();
        SafetensorsWriter.WriteIndex(folder.File(SafetensorsCheckpoint.IndexFileName),
            new Dictionary<string, string> { ["a"] = "model-00001-of-00001.safetensors" }, 0);
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(folder.Path));
        Assert.Contains("model-00001-of-00001.safetensors", ex.Message);
    }

    private static void WriteRaw(string path, string header, int dataBytes)
    {
        var json = Encoding.UTF8.GetBytes(header);
        using var stream = File.Create(path);
        var length = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)json.Length);
        stream.Write(length);
        stream.Write(json);
        stream.Write(new byte[dataBytes]);
    }
}
