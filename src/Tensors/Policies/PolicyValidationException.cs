namespace FlexGen.Tensors.Policies;

/// <summary>
/// A <see cref="Policy"/> or <see cref="CompressionConfig"/> value that breaks a rule. The message names the field,
/// the value and the rule; <see cref="ArgumentException.ParamName"/> is the field.
/// </summary>
public sealed class PolicyValidationException : ArgumentException
{
    public PolicyValidationException(string field, object? value, string rule)
        : base($"{field} = {Format(value)} is invalid: {rule}.", field)
    {
        Field = field;
        Value = value;
        Rule = rule;
    }

    /// <summary>Qualified field name, e.g. <c>Policy.WGpuPercent</c>.</summary>
    public string Field { get; }

    public object? Value { get; }

    public string Rule { get; }

    // ArgumentException appends " (Parameter '...')"; the field is already at the start of our message.
    public override string Message => $"{Field} = {Format(Value)} is invalid: {Rule}.";

    internal static string Format(object? value) => value switch
    {
        null => "null",
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        IEnumerable<double> list => "[" + string.Join(", ", list.Select(d => Format(d))) + "]",
        bool b => b ? "true" : "false",
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "null",
    };
}
