// The eager ceiling: one decode step of an OPT model as a plain loop of libtorch calls, weights resident in the compute
// dtype, the KV cache in float32 (what CPU attention computes in), no engine, no actors, no transfers. Whatever this
// reaches on a machine, the engine's decode with all weights resident cannot beat; with weights streamed from disk it
// also has to read (and for float32, widen) them. A manual benchmark, not a test:
//
//   dotnet run -c Release --project scripts/eager-ceiling -- [--dtype bfloat16|float32] [--batch 256] [--context 20]
//       [--hidden 2048 --ffn 8192 --layers 24 --heads 32 --vocab 50272] [--steps 6] [--threads N]
//
// Defaults: OPT-1.3B's shapes, bfloat16, batch 256, 20 cached positions (prompt 16 + gen 8 midway). Prints the median
// and best step time, the token/s they give, and the matmul FLOP/s; compare the token/s with bench's compute bound.
// float32 on an AMD CPU: run with LD_PRELOAD=native/mkl-cpu/libflexgen_mkl_cpu.so as flexgen does (see the README),
// or MKL takes its generic kernels.
using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

var options = new Dictionary<string, string>();
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"expected --name value, got '{args[i]}'");
    options[args[i][2..]] = args[i + 1];
}

long Option(string name, long fallback) => options.TryGetValue(name, out var v) ? long.Parse(v, CultureInfo.InvariantCulture) : fallback;
var dtype = options.GetValueOrDefault("dtype", "bfloat16") switch
{
    "bfloat16" => ScalarType.BFloat16,
    "float32" => ScalarType.Float32,
    var other => throw new ArgumentException($"--dtype must be bfloat16 or float32, got '{other}'"),
};
long batch = Option("batch", 256), context = Option("context", 20), h = Option("hidden", 2048), ffn = Option("ffn", 8192);
long layerCount = Option("layers", 24), heads = Option("heads", 32), vocab = Option("vocab", 50272), steps = Option("steps", 6);
torch.set_num_threads((int)Option("threads", Environment.ProcessorCount));
long d = h / heads, rows = batch * heads;

Tensor Weight(long o, long i) => (torch.randn(o, i) * 0.02).to(dtype);
var layers = Enumerable.Range(0, (int)layerCount).Select(_ => new
{
    Q = Weight(h, h), K = Weight(h, h), V = Weight(h, h), Out = Weight(h, h), Fc1 = Weight(ffn, h), Fc2 = Weight(h, ffn),
    KeyCache = torch.randn(context, rows, d), ValueCache = torch.randn(context, rows, d), // (t, b * heads, d)
}).ToArray();
var norm = torch.ones(h, dtype: dtype);
var bias = torch.zeros(h, dtype: dtype);
var ffnBias = torch.zeros(ffn, dtype: dtype);
var table = Weight(vocab, h);
var input = torch.randn(batch, 1, h).to(dtype);

// The engine's projection rule (LayerMath.Linear): the weight is the left operand in float32 at 9 to 256 rows (always
// for the vocabulary), in bfloat16 at 32 to 128 rows (never for the vocabulary); the product's transpose comes back, and
// a residual sum is made contiguous again.
Tensor Linear(Tensor x, Tensor w, Tensor? b, bool vocabulary = false)
{
    long r = x.numel() / x.shape[^1];
    bool left = dtype == ScalarType.Float32 ? vocabulary || (r > 8 && r <= 256) : !vocabulary && r >= 32 && r <= 128;
    if (!left) return nn.functional.linear(x, w, b);
    var columns = x.reshape(-1, x.shape[^1]).t(); // (in, r)
    var product = b is null ? torch.mm(w, columns) : torch.addmm(b.unsqueeze(1), w, columns, 1, 1); // (out, r)
    return product.t().view([.. x.shape[..^1], w.shape[0]]);
}

Tensor Residual(Tensor projection, Tensor x) => projection.is_contiguous() ? projection.add_(x) : x.add(projection);

void Step()
{
    using var scope = NewDisposeScope();
    var x = input; // (b, 1, h)
    foreach (var l in layers)
    {
        var n = nn.functional.layer_norm(x, [h], norm, bias);
        var q = Linear(n, l.Q, bias).mul_(Math.Pow(d, -0.5)).reshape(rows, 1, d).to(ScalarType.Float32);
        var k = Linear(n, l.K, bias).reshape(rows, d, 1).to(ScalarType.Float32);
        var v = Linear(n, l.V, bias).reshape(rows, 1, d).to(ScalarType.Float32);
        var probs = torch.cat([torch.bmm(q, l.KeyCache.permute(1, 2, 0)), torch.bmm(q, k)], 2).softmax(2); // (r, 1, t + 1)
        var attended = torch.bmm(probs.narrow(2, 0, context), l.ValueCache.permute(1, 0, 2))
            .add_(probs.narrow(2, context, 1).mul(v)); // (r, 1, d)
        x = Residual(Linear(attended.to(dtype).view(batch, 1, h), l.Out, bias), x);
        var n2 = nn.functional.layer_norm(x, [h], norm, bias);
        x = Residual(Linear(Linear(n2, l.Fc1, ffnBias).relu_(), l.Fc2, bias), x);
    }

    Linear(nn.functional.layer_norm(x, [h], norm, bias).view(batch, h), table, null, vocabulary: true).argmax(1);
}

Step();
Step();
var times = new List<double>();
for (int i = 0; i < steps; i++)
{
    var clock = Stopwatch.StartNew();
    Step();
    times.Add(clock.Elapsed.TotalSeconds);
}

times.Sort();
double median = times[times.Count / 2], best = times[0];
double flop = 2.0 * batch * (layerCount * (4 * h * h + 2 * h * ffn) + vocab * h);
Console.WriteLine(FormattableString.Invariant(
    $"eager ceiling: {dtype} batch {batch}, {context} cached positions, {torch.get_num_threads()} threads: step median {median:F3} s ({batch / median:F1} token/s), best {best:F3} s ({batch / best:F1} token/s); matmuls {flop / 1e9:F0} GFLOP a step, {flop / median / 1e9:F0} GFLOP/s at the median"));
