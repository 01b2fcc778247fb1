namespace FlexGen.Tensors.Tests.Npy;

using System.Buffers.Binary;
using FlexGen.Tensors.Npy;
using TorchSharp;
using static FlexGen.Tensors.Tests.Npy.NpyTestSupport;
using static TorchSharp.torch;

public class NpyFileTests
{
    [Fact]
    public void ReadHeader_should_describe_the_fixture_file()
    {
        var header = NpyFile.ReadHeader(Fixture("compression", "gd1_scale.npy"));

        Assert.Equal(1, header.MajorVersion);
        Assert.Equal("<f2", header.Descr);
        Assert.Equal(ScalarType.Float16, header.DType);
        Assert.Equal([8L, 3, 2, 16], header.Shape);
        Assert.Equal(128, header.DataOffset);
        Assert.Equal(2, header.ElementSize);
        Assert.False(header.BigEndian);
        Assert.Equal(8 * 3 * 2 * 16 * 2, header.DataLength);
    }

    [Fact]
    public void Read_should_load_a_FlexGen_weight_file_without_extension()
    {
        AssertNoTensorLeak(() =>
        {
            using var weight = NpyFile.Read(ModelFile("decoder.embed_tokens.weight"));

            Assert.Equal(ScalarType.Float16, weight.dtype);
            Assert.Equal([50272L, 64], weight.shape);
            Assert.Equal(DeviceType.CPU, weight.device_type);
            using var finite = weight.isfinite();
            using var allFinite = finite.all();
            Assert.True(allFinite.item<bool>());
            using var wide = weight.to(ScalarType.Float32);
            using var std = wide.std();
            Assert.InRange(std.item<float>(), 1e-3f, 10f); // random weights: not all zeros
        });
    }

    [Fact]
    public void Write_should_reproduce_a_NumPy_file_byte_for_byte()
    {
        using var scratch = new ScratchDirectory();
        foreach (var name in new[] { "gd0_input.npy", "gd1_packed.npy", "gd2_scale.npy" })
        {
            var original = Fixture("compression", name);
            var copy = scratch.File(name);
            using (var tensor = NpyFile.Read(original))
            {
                NpyFile.Write(copy, tensor);
            }
            Assert.Equal(File.ReadAllBytes(original), File.ReadAllBytes(copy));
        }
    }

    [Fact]
    public void Read_should_accept_version_2_and_3_headers()
    {
        using var scratch = new ScratchDirectory();
        var data = new byte[6 * 4];
        for (var i = 0; i < 6; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(i * 4), i * 1000 - 2500);
        }
        foreach (var major in new[] { 1, 2, 3 })
        {
            var path = scratch.File($"v{major}.npy");
            // Version 3 allows UTF-8 in the header; a field NumPy would not write must be ignored.
            var extra = major == 3 ? "'note': 'größe', " : "";
            File.WriteAllBytes(path, HandMadeNpy(major, $"{{'descr': '<i4', 'fortran_order': False, {extra}'shape': (2, 3), }}", data));

            Assert.Equal(major, NpyFile.ReadHeader(path).MajorVersion);
            using var tensor = NpyFile.Read(path);
            Assert.Equal([2L, 3], tensor.shape);
            Assert.Equal(new[] { -2500, -1500, -500, 500, 1500, 2500 }, tensor.data<int>().ToArray());
        }
    }

    [Fact]
    public void Read_should_swap_big_endian_data()
    {
        using var scratch = new ScratchDirectory();
        var cases = new (string Descr, byte[] Data, Func<Tensor, double[]> Values, double[] Expected)[]
        {
            (">f4", BigEndian(4, (s, i) => BinaryPrimitives.WriteSingleBigEndian(s, i + 0.5f)),
                t => t.data<float>().Select(v => (double)v).ToArray(), [0.5, 1.5, 2.5]),
            (">i8", BigEndian(8, (s, i) => BinaryPrimitives.WriteInt64BigEndian(s, -(1L << 40) + i)),
                t => t.data<long>().Select(v => (double)v).ToArray(), [-(1L << 40), -(1L << 40) + 1, -(1L << 40) + 2]),
            (">f2", BigEndian(2, (s, i) => BinaryPrimitives.WriteHalfBigEndian(s, (Half)(i - 1.25))),
                t => { using var f = t.to(ScalarType.Float32); return f.data<float>().Select(v => (double)v).ToArray(); }, [-1.25, -0.25, 0.75]),
            (">i2", BigEndian(2, (s, i) => BinaryPrimitives.WriteInt16BigEndian(s, (short)(i * 300 - 7))),
                t => t.data<short>().Select(v => (double)v).ToArray(), [-7, 293, 593]),
            (">u1", [7, 8, 9], t => t.data<byte>().Select(v => (double)v).ToArray(), [7, 8, 9]),
        };
        foreach (var (descr, data, values, expected) in cases)
        {
            var path = scratch.File("be.npy");
            File.WriteAllBytes(path, HandMadeNpy(1, $"{{'descr': '{descr}', 'fortran_order': False, 'shape': (3,), }}", data));

            Assert.Equal(descr[1] == 'u' ? false : true, NpyFile.ReadHeader(path).BigEndian);
            using var tensor = NpyFile.Read(path);
            Assert.Equal(expected, values(tensor));
        }

        static byte[] BigEndian(int size, Action<Span<byte>, int> write)
        {
            var bytes = new byte[3 * size];
            for (var i = 0; i < 3; i++)
            {
                write(bytes.AsSpan(i * size, size), i);
            }
            return bytes;
        }
    }

    [Fact]
    public void Read_should_handle_scalars_and_empty_arrays()
    {
        using var scratch = new ScratchDirectory();
        var scalarPath = scratch.File("scalar.npy");
        File.WriteAllBytes(scalarPath, HandMadeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", BitConverter.GetBytes(2.75)));
        using (var scalar = NpyFile.Read(scalarPath))
        {
            Assert.Empty(scalar.shape);
            Assert.Equal(2.75, scalar.item<double>());
        }

        var emptyPath = scratch.File("empty.npy");
        File.WriteAllBytes(emptyPath, HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0, 2), }", []));
        using var empty = NpyFile.Read(emptyPath);
        Assert.Equal([3L, 0, 2], empty.shape);
    }

    [Fact]
    public void ReadInto_should_fill_a_preallocated_tensor_in_place()
    {
        var path = Fixture("compression", "gd2_input.npy");
        AssertNoTensorLeak(() =>
        {
            using var expected = NpyFile.Read(path);
            using var buffer = zeros(2, 37, 24, 100, dtype: ScalarType.Float16);
            using var slot = buffer[1];

            NpyFile.ReadInto(path, slot);

            using var second = buffer[1];
            Assert.True(SameTensor(second, expected));
            using var first = buffer[0];
            using var nonZero = first.count_nonzero();
            Assert.Equal(0, nonZero.item<long>());
        });
    }

    [Fact]
    public void ReadInto_should_reject_a_destination_of_another_shape_dtype_or_layout()
    {
        var path = Fixture("compression", "gd0_input.npy"); // float16 (200, 96)
        AssertNoTensorLeak(() =>
        {
            using var wrongShape = empty(96, 200, dtype: ScalarType.Float16);
            using var wrongDtype = empty(200, 96, dtype: ScalarType.Float32);
            using var wide = empty(96, 200, dtype: ScalarType.Float16);
            using var transposed = wide.t();

            var shapeError = Assert.Throws<ArgumentException>(() => NpyFile.ReadInto(path, wrongShape));
            Assert.Contains("gd0_input.npy", shapeError.Message);
            Assert.Contains("(96, 200)", shapeError.Message);
            var dtypeError = Assert.Throws<ArgumentException>(() => NpyFile.ReadInto(path, wrongDtype));
            Assert.Contains("Float32", dtypeError.Message);
            var layoutError = Assert.Throws<ArgumentException>(() => NpyFile.ReadInto(path, transposed));
            Assert.Contains("contiguous", layoutError.Message);
        });
    }

    [Fact]
    public void Write_should_write_only_the_region_a_view_covers()
    {
        using var scratch = new ScratchDirectory();
        AssertNoTensorLeak(() =>
        {
            using var flat = arange(0, 60, dtype: ScalarType.Int64);
            using var whole = flat.reshape(6, 10);
            using var rows = whole.narrow(0, 2, 3);           // contiguous region
            using var columnBlock = whole.narrow(1, 4, 3);
            using var columns = columnBlock.t();              // strided region

            NpyFile.Write(scratch.File("rows.npy"), rows);
            NpyFile.Write(scratch.File("columns.npy"), columns);

            using var rowsBack = NpyFile.Read(scratch.File("rows.npy"));
            using var columnsBack = NpyFile.Read(scratch.File("columns.npy"));
            Assert.True(SameTensor(rowsBack, rows));
            Assert.Equal([3L, 6], columnsBack.shape);
            Assert.True(SameTensor(columnsBack, columns));
            Assert.Equal(128 + 3 * 10 * 8, new FileInfo(scratch.File("rows.npy")).Length);
        });
    }

    [Fact]
    public void Read_should_stream_a_large_file_into_tensor_memory_without_a_managed_copy()
    {
        using var scratch = new ScratchDirectory();
        var path = scratch.File("large.npy");
        // 3.5 read chunks of float32: the chunk loop and the last partial chunk both run.
        var count = 7L * NpyFile.ChunkBytes / 2 / sizeof(float);
        using var original = arange(0, count, dtype: ScalarType.Float32);
        NpyFile.Write(path, original);
        Assert.Equal(128 + count * 4, new FileInfo(path).Length);

        var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        using var read = NpyFile.Read(path);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;

        Assert.True(SameTensor(read, original));
        // The file is 28 MiB; reading it must allocate only small bookkeeping objects on the managed heap.
        Assert.True(allocated < 256 * 1024, $"reading a {count * 4} byte file allocated {allocated} managed bytes");
    }

    [Fact]
    public void Write_should_reject_a_dtype_NumPy_cannot_hold()
    {
        using var scratch = new ScratchDirectory();
        using var bf16 = ones(3, dtype: ScalarType.BFloat16);
        var error = Assert.Throws<ArgumentException>(() => NpyFile.Write(scratch.File("bf16.npy"), bf16));
        Assert.Contains("BFloat16", error.Message);
        Assert.Contains("bf16.npy", error.Message);
    }
}
