using System.Runtime.CompilerServices;

// Tests check the sparse attention kernel against the dense one directly (LayersTests).
[assembly: InternalsVisibleTo("FlexGen.Tensors.Tests")]

// The hardware profiler (FlexGen.Actors) times the engine's own projections (LayerMath.Linear), not a stand-in.
[assembly: InternalsVisibleTo("FlexGen.Actors")]
