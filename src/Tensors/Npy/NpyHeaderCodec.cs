namespace FlexGen.Tensors.Npy;

using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using TorchSharp;

/// <summary>Reads and writes the .npy preamble: magic, version, header length and the header dict.</summary>
internal static class NpyHeaderCodec
{
    static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>NumPy aligns the data to this many bytes (header padded with spaces).</summary>
    const int Alignment = 64;

    /// <summary>Reads the preamble from <paramref name="stream"/>, leaving it positioned at the data.</summary>
    public static NpyHeader Read(Stream stream, string fileName)
    {
        Span<byte> preamble = stackalloc byte[8];
        ReadExactly(stream, preamble, fileName, "the magic string and version");
        if (!preamble[..6].SequenceEqual(Magic))
        {
            throw new NpyFormatException(fileName,
                $"bad magic {Convert.ToHexString(preamble[..6])}: not a .npy file (expected 934E554D5059, \"\\x93NUMPY\")");
        }
        int major = preamble[6], minor = preamble[7];
        int lengthSize = major switch
        {
            1 => 2,
            2 or 3 => 4,
            _ => throw new NpyFormatException(fileName, $"unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"),
        };
        Span<byte> lengthBytes = stackalloc byte[4];
        ReadExactly(stream, lengthBytes[..lengthSize], fileName, "the header length");
        long headerLength = lengthSize == 2
            ? BinaryPrimitives.ReadUInt16LittleEndian(lengthBytes)
            : BinaryPrimitives.ReadUInt32LittleEndian(lengthBytes);
        if (headerLength > 1 << 24)
        {
            throw new NpyFormatException(fileName, $"bad header: header length {headerLength} bytes is implausible");
        }
        var headerBytes = new byte[headerLength];
        ReadExactly(stream, headerBytes, fileName, $"the {headerLength}-byte header");
        // Versions 1 and 2 store the header in latin-1, version 3 in UTF-8.
        var text = major == 3 ? Encoding.UTF8.GetString(headerBytes) : Encoding.Latin1.GetString(headerBytes);

        var (descr, fortranOrder, shape) = ParseDict(text, fileName);
        if (fortranOrder)
        {
            throw new NpyFormatException(fileName,
                "Fortran-order (column-major) data is not supported; save the array in C order (np.ascontiguousarray)");
        }
        if (!NpyDType.TryParse(descr, out var dtype, out var bigEndian))
        {
            throw new NpyFormatException(fileName,
                $"unsupported dtype '{descr}' (supported: {string.Join(", ", NpyDType.SupportedCodes)}, any byte order)");
        }
        return new NpyHeader
        {
            MajorVersion = major,
            MinorVersion = minor,
            Descr = descr,
            DType = dtype,
            BigEndian = bigEndian,
            FortranOrder = false,
            Shape = shape,
            DataOffset = 8 + lengthSize + headerLength,
            ElementSize = int.Parse(descr[2..], CultureInfo.InvariantCulture),
        };
    }

    /// <summary>The complete preamble (magic .. padded header) for a C-order little-endian array.</summary>
    public static byte[] Encode(torch.ScalarType dtype, ReadOnlySpan<long> shape)
    {
        var shapeText = shape.Length switch
        {
            0 => "()",
            1 => $"({shape[0]},)",
            _ => "(" + string.Join(", ", shape.ToArray()) + ")",
        };
        var dict = $"{{'descr': '{NpyDType.DescrOf(dtype)}', 'fortran_order': False, 'shape': {shapeText}, }}";
        // Version 1 when the header length fits 16 bits (as NumPy does), else version 2.
        var major = 1;
        var prefix = 10;
        var total = Align(prefix + dict.Length + 1);
        if (total - prefix > ushort.MaxValue)
        {
            major = 2;
            prefix = 12;
            total = Align(prefix + dict.Length + 1);
        }
        var bytes = new byte[total];
        Magic.CopyTo(bytes);
        bytes[6] = (byte)major;
        bytes[7] = 0;
        if (major == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)(total - prefix));
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)(total - prefix));
        }
        var body = bytes.AsSpan(prefix);
        body.Fill((byte)' ');
        Encoding.ASCII.GetBytes(dict, body);
        body[^1] = (byte)'\n';
        return bytes;

        static int Align(int length) => (length + Alignment - 1) / Alignment * Alignment;
    }

    static void ReadExactly(Stream stream, Span<byte> buffer, string fileName, string what)
    {
        var read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        if (read < buffer.Length)
        {
            throw new NpyFormatException(fileName, $"truncated file: it ends inside {what}");
        }
    }

    /// <summary>Parses NumPy's header, a Python dict literal with keys descr, fortran_order and shape.</summary>
    static (string Descr, bool FortranOrder, long[] Shape) ParseDict(string text, string fileName)
    {
        var parser = new LiteralParser(text, fileName);
        var dict = parser.ParseTopLevelDict();
        if (!dict.TryGetValue("descr", out var descrValue))
        {
            throw parser.Error("the header has no 'descr' key");
        }
        if (descrValue is not string descr)
        {
            throw new NpyFormatException(fileName,
                $"unsupported dtype: structured descr {parser.Describe(descrValue)} (only plain numeric and bool dtypes are supported)");
        }
        if (!dict.TryGetValue("fortran_order", out var fortranValue) || fortranValue is not bool fortranOrder)
        {
            throw parser.Error("the header's 'fortran_order' is missing or not True/False");
        }
        if (!dict.TryGetValue("shape", out var shapeValue) || shapeValue is not List<object> shapeItems)
        {
            throw parser.Error("the header's 'shape' is missing or not a tuple");
        }
        var shape = new long[shapeItems.Count];
        for (var i = 0; i < shape.Length; i++)
        {
            if (shapeItems[i] is not long dim || dim < 0)
            {
                throw parser.Error($"the header's 'shape' has a bad dimension {parser.Describe(shapeItems[i])} at index {i}");
            }
            shape[i] = dim;
        }
        try
        {
            _ = shape.Aggregate(1L, (count, dim) => checked(count * dim * 8));
        }
        catch (OverflowException)
        {
            throw parser.Error($"the header's 'shape' ({string.Join(", ", shape)}) is too large");
        }
        return (descr, fortranOrder, shape);
    }

    /// <summary>Just enough of Python's literal syntax for .npy headers: dicts, tuples, lists, strings, ints, booleans, None.</summary>
    sealed class LiteralParser(string text, string fileName)
    {
        int _position;

        public NpyFormatException Error(string problem) =>
            new(fileName, $"bad header: {problem} (header: {text.TrimEnd()})");

        public string Describe(object? value) => value switch
        {
            null => "None",
            string s => $"'{s}'",
            bool b => b ? "True" : "False",
            List<object> items => "(" + string.Join(", ", items.Select(Describe)) + ")",
            Dictionary<string, object?> => "{...}",
            _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "?",
        };

        public Dictionary<string, object?> ParseTopLevelDict()
        {
            SkipWhitespace();
            if (Peek() != '{')
            {
                throw Error("it is not a Python dict literal");
            }
            var dict = ParseDict();
            SkipWhitespace();
            if (_position != text.Length)
            {
                throw Error($"unexpected text after the dict at offset {_position}");
            }
            return dict;
        }

        Dictionary<string, object?> ParseDict()
        {
            Expect('{');
            var dict = new Dictionary<string, object?>();
            while (true)
            {
                SkipWhitespace();
                if (Peek() == '}')
                {
                    _position++;
                    return dict;
                }
                if (ParseValue() is not string key)
                {
                    throw Error($"a dict key at offset {_position} is not a string");
                }
                SkipWhitespace();
                Expect(':');
                dict[key] = ParseValue();
                SkipWhitespace();
                if (Peek() == ',')
                {
                    _position++;
                }
                else if (Peek() != '}')
                {
                    throw Error($"expected ',' or '}}' at offset {_position}");
                }
            }
        }

        object? ParseValue()
        {
            SkipWhitespace();
            var c = Peek();
            switch (c)
            {
                case '\'' or '"':
                    return ParseString();
                case '(' or '[':
                    return ParseSequence(c == '(' ? ')' : ']');
                case '{':
                    return ParseDict();
            }
            if (c == '-' || char.IsAsciiDigit(c))
            {
                var start = _position;
                _position++;
                while (char.IsAsciiDigit(Peek()))
                {
                    _position++;
                }
                var digits = text[start.._position];
                if (Peek() is 'L' or 'l')
                {
                    _position++; // Python 2 long suffix, written by old NumPy.
                }
                if (!long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number))
                {
                    throw Error($"bad integer '{digits}' at offset {start}");
                }
                return number;
            }
            foreach (var (word, value) in new (string, object?)[] { ("True", true), ("False", false), ("None", null) })
            {
                if (string.CompareOrdinal(text, _position, word, 0, word.Length) == 0)
                {
                    _position += word.Length;
                    return value;
                }
            }
            throw Error($"unexpected character '{c}' at offset {_position}");
        }

        List<object> ParseSequence(char close)
        {
            _position++;
            var items = new List<object>();
            while (true)
            {
                SkipWhitespace();
                if (Peek() == close)
                {
                    _position++;
                    return items;
                }
                items.Add(ParseValue() ?? "None");
                SkipWhitespace();
                if (Peek() == ',')
                {
                    _position++;
                }
                else if (Peek() != close)
                {
                    throw Error($"expected ',' or '{close}' at offset {_position}");
                }
            }
        }

        string ParseString()
        {
            var quote = text[_position++];
            var end = text.IndexOf(quote, _position);
            if (end < 0)
            {
                throw Error($"unterminated string at offset {_position - 1}");
            }
            var value = text[_position..end];
            _position = end + 1;
            return value;
        }

        char Peek() => _position < text.Length ? text[_position] : '\0';

        void Expect(char c)
        {
            if (Peek() != c)
            {
                throw Error($"expected '{c}' at offset {_position}");
            }
            _position++;
        }

        void SkipWhitespace()
        {
            while (_position < text.Length && char.IsWhiteSpace(text[_position]))
            {
                _position++;
            }
        }
    }
}
