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
    [InlineData("{\"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [6, 4]}}", "are not 0 <= begin <= end")]
    [InlineData("{\"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [-2, 0]}}", "are not 0 <= begin <= end")]
    [InlineData("{\"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [800, 802]}}", "past the data section")]
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

    [Theory]
    [InlineData(0, 4, 2, 6)]
    [InlineData(0, 4, 0, 4)]
    [InlineData(4, 8, 0, 6)]
    [InlineData(0, 8, 2, 4)]
    public void Reader_should_refuse_tensors_whose_data_overlap_naming_both(int aBegin, int aEnd, int bBegin, int bEnd)
    {
        using var folder = new TempFolder();
        string path = folder.File("m.safetensors");
        WriteRaw(path, $"{{\"a\": {{\"dtype\": \"U8\", \"shape\": [{aEnd - aBegin}], \"data_offsets\": [{aBegin}, {aEnd}]}}, " +
                       $"\"b\": {{\"dtype\": \"U8\", \"shape\": [{bEnd - bBegin}], \"data_offsets\": [{bBegin}, {bEnd}]}}}}", dataBytes: 8);

        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path));

        Assert.StartsWith(path + ": tensors '", ex.Message);
        Assert.Contains("'a'", ex.Message);
        Assert.Contains("'b'", ex.Message);
        Assert.Contains("overlap; each tensor must have its own bytes", ex.Message);
    }

    [Fact]
    public void Reader_should_accept_adjacent_and_empty_tensors()
    {
        using var folder = new TempFolder();
        string path = folder.File("m.safetensors");
        WriteRaw(path, "{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}, " +
                       "\"e\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [2, 2]}, " +
                       "\"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}", dataBytes: 8);

        using var file = SafetensorsFile.Open(path);

        Assert.Equal(3, file.Entries.Count);
    }

    [Theory]
    [InlineData("/etc/passwd", "is an absolute path")]
    [InlineData("../good/model.safetensors", "outside the checkpoint folder")]
    [InlineData("sub/../../good/model.safetensors", "outside the checkpoint folder")]
    public void Checkpoint_should_refuse_a_shard_outside_its_folder_naming_it(string shard, string rule)
    {
        using var folder = new TempFolder();
        string checkpoint = folder.File("hf"), good = folder.File("good");
        Directory.CreateDirectory(Path.Combine(checkpoint, "sub"));
        Directory.CreateDirectory(good);
        using var a = torch.ones(2, dtype: torch.ScalarType.Float16);
        SafetensorsWriter.Write(Path.Combine(good, SafetensorsCheckpoint.SingleFileName), [new("a", a)]);
        SafetensorsWriter.WriteIndex(Path.Combine(checkpoint, SafetensorsCheckpoint.IndexFileName),
            new Dictionary<string, string> { ["a"] = shard }, 4);

        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsCheckpoint.Open(checkpoint));

        Assert.StartsWith(Path.Combine(checkpoint, SafetensorsCheckpoint.IndexFileName) + $": shard '{shard}' (holding 'a') ", ex.Message);
        Assert.Contains(rule, ex.Message);
    }

    [Fact]
    public void Checkpoint_should_read_shards_in_subfolders_and_through_links()
    {
        using var folder = new TempFolder();
        using var blobs = new TempFolder();
        Directory.CreateDirectory(folder.File("one"));
        Directory.CreateDirectory(folder.File("two"));
        using var a = torch.ones(2, dtype: torch.ScalarType.Float16);
        using var b = torch.zeros(3, dtype: torch.ScalarType.Float16);
        using var c = torch.full(4, 7, dtype: torch.ScalarType.Float16);
        // The same file name in two subfolders: two different shards.
        SafetensorsWriter.Write(folder.File("one/model.safetensors"), [new("a", a)]);
        SafetensorsWriter.Write(folder.File("two/model.safetensors"), [new("b", b)]);
        SafetensorsWriter.Write(blobs.File("c.safetensors"), [new("c", c)]);
        // A link the file system's owner made may point anywhere (the Hugging Face cache links snapshots into blobs/).
        File.CreateSymbolicLink(folder.File("c-link.safetensors"), blobs.File("c.safetensors"));
        SafetensorsWriter.WriteIndex(folder.File(SafetensorsCheckpoint.IndexFileName),
            new Dictionary<string, string> { ["a"] = "one/model.safetensors", ["b"] = "two/model.safetensors", ["c"] = "c-link.safetensors" }, 18);

        using var checkpoint = SafetensorsCheckpoint.Open(folder.Path);

        Assert.Equal(3, checkpoint.ShardCount);
        using var readB = checkpoint.Read("b");
        using var readC = checkpoint.Read("c");
        Assert.True(readB.eq(b).all().item<bool>());
        Assert.True(readC.eq(c).all().item<bool>());
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
