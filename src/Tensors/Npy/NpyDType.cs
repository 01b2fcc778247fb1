namespace FlexGen.Tensors.Npy;

using TorchSharp;

/// <summary>The NumPy dtypes this project reads and writes, and their TorchSharp scalar types.</summary>
public static class NpyDType
{
    // Type code + item size (without the byte-order character) -> scalar type.
    static readonly Dictionary<string, torch.ScalarType> ScalarTypeByCode = new()
    {
        ["f2"] = torch.ScalarType.Float16,
        ["f4"] = torch.ScalarType.Float32,
        ["f8"] = torch.ScalarType.Float64,
        ["i1"] = torch.ScalarType.Int8,
        ["i2"] = torch.ScalarType.Int16,
        ["i4"] = torch.ScalarType.Int32,
        ["i8"] = torch.ScalarType.Int64,
        ["u1"] = torch.ScalarType.Byte,
        ["b1"] = torch.ScalarType.Bool,
    };

    /// <summary>The dtypes supported, as NumPy type codes.</summary>
    public static IReadOnlyCollection<string> SupportedCodes => ScalarTypeByCode.Keys;

    /// <summary>True when <paramref name="type"/> can be written to a .npy file.</summary>
    public static bool IsSupported(torch.ScalarType type) => ScalarTypeByCode.ContainsValue(type);

    /// <summary>The little-endian .npy descr of a scalar type, e.g. <c>&lt;f2</c> or <c>|u1</c>.</summary>
    public static string DescrOf(torch.ScalarType type)
    {
        foreach (var (code, scalarType) in ScalarTypeByCode)
        {
            if (scalarType == type)
            {
                return (code[1] == '1' ? "|" : "<") + code;
            }
        }
        throw new NotSupportedException(
            $"dtype {type} has no .npy equivalent here (supported: {string.Join(", ", ScalarTypeByCode.Values)})");
    }

    /// <summary>
    /// Parses a descr such as <c>&lt;f4</c>: the scalar type and whether the data is big-endian.
    /// Returns false for anything unsupported (other kinds, sizes, structured dtypes).
    /// </summary>
    internal static bool TryParse(string descr, out torch.ScalarType type, out bool bigEndian)
    {
        type = default;
        bigEndian = false;
        if (descr.Length != 3)
        {
            return false;
        }
        var order = descr[0];
        if (order is not ('<' or '>' or '|' or '='))
        {
            return false;
        }
        if (!ScalarTypeByCode.TryGetValue(descr[1..], out type))
        {
            return false;
        }
        // Byte order matters only for multi-byte items; '=' is native, and every supported host is little-endian.
        bigEndian = order == '>' && descr[2] != '1';
        return true;
    }
}
