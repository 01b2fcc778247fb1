namespace FlexGen.Tensors.Tests.Npy;

using FlexGen.Tensors.Npy;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;

/// <summary>Every malformed file gives an <see cref="NpyFormatException"/> that names the file and the problem.</summary>
public sealed class NpyFileErrorTests : IDisposable
{
    readonly ScratchDirectory _scratch = new();

    public void Dispose() => _scratch.Dispose();

    static readonly byte[] SixFloats = new byte[6 * 4];

    NpyFormatException ReadFails(string name, byte[] content, string expectedProblem)
    {
        var path = _scratch.File(name);
        File.WriteAllBytes(path, content);
        NpyFormatException? error = null;
        AssertNoTensorLeak(() => error = Assert.Throws<NpyFormatException>(() => NpyFile.Read(path)));
        Assert.Equal(path, error!.FilePath);
        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains(expectedProblem, error.Problem);
        Assert.IsAssignableFrom<IOException>(error);
        return error;
    }

    [Fact]
    public void Read_should_reject_Fortran_order()
    {
        ReadFails("fortran.npy", HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", SixFloats),
            "Fortran-order");
    }

    [Theory]
    [InlineData("<u2")]
    [InlineData("<u4")]
    [InlineData("<c8")]
    [InlineData("|O")]
    [InlineData("<U5")]
    [InlineData("<f16")]
    [InlineData("<M8[ns]")]
    public void Read_should_reject_an_unsupported_dtype(string descr)
    {
        var error = ReadFails("dtype.npy", HandMadeNpy(1, $"{{'descr': '{descr}', 'fortran_order': False, 'shape': (6,), }}", SixFloats),
            "unsupported dtype");
        Assert.Contains(descr, error.Problem);
    }

    [Fact]
    public void Read_should_reject_a_structured_dtype()
    {
        ReadFails("structured.npy",
            HandMadeNpy(1, "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (3,), }", SixFloats),
            "structured descr");
    }

    [Fact]
    public void Read_should_reject_bad_magic()
    {
        var content = HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", SixFloats);
        content[1] = (byte)'X';
        ReadFails("magic.npy", content, "bad magic");
        ReadFails("text.npy", "this is a text file, long enough to hold a header"u8.ToArray(), "not a .npy file");
    }

    [Fact]
    public void Read_should_reject_an_unknown_format_version()
    {
        ReadFails("v4.npy", HandMadeNpy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", SixFloats) is var b
            ? Patch(b, 6, 4) : [], "unsupported .npy format version 4.0");

        static byte[] Patch(byte[] bytes, int at, byte value)
        {
            bytes[at] = value;
            return bytes;
        }
    }

    [Theory]
    [InlineData("not a dict", "not a Python dict literal")]
    [InlineData("{'fortran_order': False, 'shape': (6,), }", "no 'descr' key")]
    [InlineData("{'descr': '<f4', 'shape': (6,), }", "'fortran_order' is missing")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, }", "'shape' is missing")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': 6, }", "'shape' is missing or not a tuple")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", "bad dimension -3")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'x'), }", "bad dimension 'x'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (6,) ", "expected ',' or '}'")]
    [InlineData("{'descr' '<f4', 'fortran_order': False, 'shape': (6,), }", "expected ':'")]
    [InlineData("{'descr': '<f4, 'fortran_order': False, 'shape': (6,), }", "expected ',' or '}'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), } trailing", "unexpected text after the dict")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "too large")]
    public void Read_should_reject_a_bad_header(string header, string expectedProblem)
    {
        var error = ReadFails("header.npy", HandMadeNpy(1, header, SixFloats), expectedProblem);
        Assert.Contains("bad header", error.Problem);
    }

    [Fact]
    public void Read_should_reject_data_longer_than_the_shape()
    {
        ReadFails("long.npy", HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", SixFloats),
            "size mismatch: the header announces shape (5) of '<f4', 20 data bytes, but 24 follow the header");
    }

    [Fact]
    public void Read_should_reject_truncated_data()
    {
        ReadFails("short.npy", HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", SixFloats),
            "truncated file: the header announces shape (2, 4) of '<f4', 32 data bytes, but only 24 follow the header");
    }

    [Fact]
    public void Read_should_reject_a_file_truncated_inside_the_header()
    {
        var whole = HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", SixFloats);
        ReadFails("cut-header.npy", whole[..40], "truncated file: it ends inside the 118-byte header");
        ReadFails("cut-preamble.npy", whole[..5], "truncated file: it ends inside the magic string and version");
        ReadFails("empty.npy", [], "truncated file");
    }

    [Fact]
    public void ReadHeader_should_raise_the_same_errors_as_Read()
    {
        var path = _scratch.File("fortran-header.npy");
        File.WriteAllBytes(path, HandMadeNpy(3, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", SixFloats));
        var error = Assert.Throws<NpyFormatException>(() => NpyFile.ReadHeader(path));
        Assert.Contains("Fortran-order", error.Message);
    }

    [Fact]
    public void Read_should_report_a_missing_file_by_name()
    {
        var path = _scratch.File("missing.npy");
        var error = Assert.Throws<FileNotFoundException>(() => NpyFile.Read(path));
        Assert.Contains("missing.npy", error.Message);
    }
}
