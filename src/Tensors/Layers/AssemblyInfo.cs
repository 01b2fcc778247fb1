using System.Runtime.CompilerServices;

// Tests check the sparse attention kernel against the dense one directly (LayersTests).
[assembly: InternalsVisibleTo("FlexGen.Tensors.Tests")]
