namespace FlexGen.Actors.Engine;

using System.Collections.Immutable;
using FlexGen.Actors.Pipeline;
using FlexGen.Tensors.Tiers;
using static TorchSharp.torch;

/// <summary>
/// The block's generated ids, (rows, gen_len), pads until written, and the stop token: a row that emitted it gets pads
/// from then on; once every valid row has, <see cref="StoppedAfterToken"/> says after which token.
/// </summary>
internal sealed class TokenOutput
{
    private readonly BlockRequest _block;
    private readonly int _padTokenId;
    private readonly int _batchRows;
    private readonly long[][] _ids;
    private readonly bool[] _stopped;
    private int _validRowsRunning;
    private volatile int _stoppedAfterToken = -1;

    public TokenOutput(BlockRequest block, int padTokenId, int batchRows)
    {
        _block = block;
        _padTokenId = padTokenId;
        _batchRows = batchRows;
        _ids = Enumerable.Range(0, block.Rows).Select(_ => Enumerable.Repeat((long)padTokenId, block.Generation.GenLen).ToArray()).ToArray();
        _stopped = new bool[block.Rows];
        _validRowsRunning = block.ValidRows;
    }

    /// <summary>The token after which every valid row has emitted the stop token; null while some still run.</summary>
    public int? StoppedAfterToken => _stoppedAfterToken < 0 ? null : _stoppedAfterToken;

    /// <summary>A copy of the ids written so far.</summary>
    public long[][] Snapshot() => _ids.Select(r => (long[])r.Clone()).ToArray();

    /// <summary>(b) the ids GPU batch k generated at token i - 1: the input of token i.</summary>
    public long[] PreviousTokens(int i, int k) => Enumerable.Range(k * _batchRows, _batchRows).Select(r => _ids[r][i - 1]).ToArray();

    /// <summary>Token i of GPU batch k as written (pads for rows stopped before); valid after its <see cref="Write"/>.</summary>
    public GeneratedTokens Written(int i, int k) =>
        new(i, k * _batchRows, Enumerable.Range(k * _batchRows, _batchRows).Select(r => _ids[r][i]).ToImmutableArray());

    /// <summary>Writes token i of GPU batch k from <paramref name="ids"/> (b, 1); returns the bytes read.</summary>
    public long Write(int i, int k, DeviceTensor ids)
    {
        using var onCpu = ids.Data.to(CPU);
        Write(i, k, onCpu.data<long>().ToArray());
        return ids.Bytes;
    }

    /// <summary>Writes token i of GPU batch k: <paramref name="values"/> (b) as sampled.</summary>
    public void Write(int i, int k, IReadOnlyList<long> values)
    {
        for (int r = 0; r < _batchRows; r++)
        {
            int row = k * _batchRows + r;
            long id = _stopped[row] ? _padTokenId : values[r];
            if (_block.Generation.StopTokenId is { } stop && id == stop && !_stopped[row])
            {
                _stopped[row] = true;
                if (row < _block.ValidRows && Interlocked.Decrement(ref _validRowsRunning) == 0)
                {
                    _stoppedAfterToken = i; // the padding rows' output is dropped: they need not stop
                }
            }

            _ids[row][i] = id;
        }
    }
}
