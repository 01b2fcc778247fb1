namespace FlexGen.Tensors.Tests.Npy;

using System.IO.Compression;
using FlexGen.Tensors.Npy;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

public class NpzFileTests
{
    static string Top16(string policy) =>
        Fixture("opt-tiny", "flexllmgen_top16", $"flexllmgen_{policy}_top16.npz");

    [Fact]
    public void Read_should_return_the_named_arrays_of_a_deflated_fixture()
    {
        AssertNoTensorLeak(() =>
        {
            using var arrays = NpzFile.Read(Top16("all_gpu"));

            Assert.Equal(["ids", "tokens", "vals"], arrays.Keys.Order());
            Assert.Equal(ScalarType.Int32, arrays["ids"].dtype);
            Assert.Equal([8L, 10, 16], arrays["ids"].shape);
            Assert.Equal(ScalarType.Float32, arrays["vals"].dtype);
            Assert.Equal([8L, 10, 16], arrays["vals"].shape);
            Assert.Equal(ScalarType.Int64, arrays["tokens"].dtype);

            // Cross-check the archive against the separate .npy of the same run: the best id is the token.
            // (The .npy is int32 although the fixture README says int64.)
            using var tokens32 = NpyFile.Read(Fixture("opt-tiny", "flexllmgen_all_gpu_tokens.npy"));
            using var tokens = tokens32.to(ScalarType.Int64);
            using var best = arrays["ids"].select(2, 0);
            using var bestAsLong = best.to(ScalarType.Int64);
            Assert.True(SameTensor(bestAsLong, tokens));
            Assert.True(SameTensor(arrays["tokens"], tokens));
            // Best first.
            using var first = arrays["vals"].select(2, 0);
            using var second = arrays["vals"].select(2, 1);
            using var ordered = first.ge(second);
            using var allOrdered = ordered.all();
            Assert.True(allOrdered.item<bool>());
        });
    }

    [Fact]
    public void ReadArray_should_read_one_entry_and_name_the_missing_one()
    {
        using var vals = NpzFile.ReadArray(Top16("compress_cache"), "vals");
        Assert.Equal([8L, 10, 16], vals.shape);

        var error = Assert.Throws<KeyNotFoundException>(() => NpzFile.ReadArray(Top16("compress_cache"), "logits"));
        Assert.Contains("'logits'", error.Message);
        Assert.Contains("ids.npy", error.Message);
    }

    [Fact]
    public void Write_then_Read_should_round_trip_stored_and_deflated_archives()
    {
        using var scratch = new ScratchDirectory();
        AssertNoTensorLeak(() =>
        {
            using var weights = NpyFile.Read(Fixture("compression", "gd1_input.npy"));
            using var countsFlat = arange(0, 12, dtype: ScalarType.Int64);
            using var counts = countsFlat.reshape(3, 4);
            using var flags = tensor(new[] { true, false, true });
            foreach (var level in new[] { CompressionLevel.NoCompression, CompressionLevel.Optimal })
            {
                var path = scratch.File($"arrays-{level}.npz");
                NpzFile.Write(path, [new("weights", weights), new("counts", counts), new("flags", flags)], level);

                NpzFile.Write(path, [new("weights", weights), new("counts", counts), new("flags", flags)], level); // replaces

                using var arrays = NpzFile.Read(path);
                Assert.Equal(3, arrays.Count);
                Assert.True(SameTensor(arrays["weights"], weights));
                Assert.True(SameTensor(arrays["counts"], counts));
                Assert.True(SameTensor(arrays["flags"], flags));
            }
        });
    }

    [Fact]
    public void Read_should_reject_a_file_that_is_not_a_zip_archive()
    {
        var path = Fixture("compression", "gd0_scale.npy");
        var error = Assert.Throws<NpyFormatException>(() => NpzFile.Read(path));
        Assert.Equal(path, error.FilePath);
        Assert.Contains("not a valid .npz", error.Message);
    }

    [Fact]
    public void Read_should_name_the_archive_and_entry_of_a_bad_array()
    {
        using var scratch = new ScratchDirectory();
        var path = scratch.File("bad.npz");
        using (var archive = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var good = archive.CreateEntry("good.npy").Open())
            {
                good.Write(File.ReadAllBytes(Fixture("compression", "gd0_scale.npy")));
            }
            using var bad = archive.CreateEntry("cut.npy").Open();
            bad.Write(File.ReadAllBytes(Fixture("compression", "gd0_scale.npy"))[..200]);
        }
        NpyFormatException? error = null;
        AssertNoTensorLeak(() => error = Assert.Throws<NpyFormatException>(() => NpzFile.Read(path)));
        Assert.Equal(path + "!cut.npy", error!.FilePath);
        Assert.Contains("truncated file", error.Message);
    }

    [Fact]
    public void Read_should_reject_an_entry_that_is_not_an_array()
    {
        using var scratch = new ScratchDirectory();
        var path = scratch.File("notes.npz");
        using (var archive = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using var notes = archive.CreateEntry("notes.txt").Open();
            notes.Write("hello"u8);
        }
        var error = Assert.Throws<NpyFormatException>(() => NpzFile.Read(path));
        Assert.Contains("notes.txt", error.FilePath);
        Assert.Contains("not a .npy array", error.Message);
    }
}
