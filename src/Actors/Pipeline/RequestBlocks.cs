namespace FlexGen.Actors.Pipeline;

using System.Collections.Immutable;
using FlexGen.Actors.Messages;
using FlexGen.Tensors.Policies;

/// <summary>Validates a request and cuts it into blocks of gpu_batch_size * num_gpu_batches rows.</summary>
public static class RequestBlocks
{
    /// <summary>
    /// The blocks of <paramref name="request"/>. The last block is filled up with copies of the request's last
    /// row (real tokens, so the padding rows compute ordinary numbers); their output is dropped.
    /// </summary>
    public static IReadOnlyList<BlockRequest> Split(GenerateRequest request, Policy policy, int defaultPadTokenId)
    {
        Validate(request);
        var prompts = request.PromptIds;
        int execute = request.CutGenLen ?? request.Generation.GenLen;
        int pad = request.PadTokenId ?? defaultPadTokenId;
        var mask = new ImmutableArray<bool>[prompts.Length];
        for (int n = 0; n < prompts.Length; n++)
        {
            mask[n] = request.AttentionMask is { } given ? given[n] : prompts[n].Select(id => id != pad).ToImmutableArray();
            if (!mask[n].Any(m => m))
            {
                throw new ArgumentException($"GenerateRequest prompt {n} has no real token (all masked or pad id {pad})", nameof(request));
            }
        }

        int blockRows = policy.GpuBatchSize * policy.NumGpuBatches;
        var blocks = new List<BlockRequest>();
        for (int start = 0, index = 0; start < prompts.Length; start += blockRows, index++)
        {
            int valid = Math.Min(blockRows, prompts.Length - start);
            var ids = ImmutableArray.CreateBuilder<ImmutableArray<long>>(blockRows);
            var blockMask = ImmutableArray.CreateBuilder<ImmutableArray<bool>>(blockRows);
            for (int row = 0; row < blockRows; row++)
            {
                int source = start + Math.Min(row, valid - 1);
                ids.Add(prompts[source]);
                blockMask.Add(mask[source]);
            }

            blocks.Add(new BlockRequest(request.RequestId, index, ids.MoveToImmutable(), blockMask.MoveToImmutable(), valid, request.Generation, execute));
        }

        return blocks;
    }

    /// <summary>
    /// The rules a request must meet that need no model (shapes, lengths, mask): the coordinator checks them before it
    /// loads a model for the request's policy. Throws ArgumentException naming the field.
    /// </summary>
    public static void Validate(GenerateRequest request)
    {
        var prompts = request.PromptIds;
        if (prompts.IsDefaultOrEmpty)
        {
            throw new ArgumentException("GenerateRequest.PromptIds has no prompts", nameof(request));
        }

        int promptLen = prompts[0].IsDefault ? 0 : prompts[0].Length;
        if (promptLen == 0)
        {
            throw new ArgumentException("GenerateRequest.PromptIds[0] is empty", nameof(request));
        }

        for (int n = 0; n < prompts.Length; n++)
        {
            int length = prompts[n].IsDefault ? 0 : prompts[n].Length;
            if (length != promptLen)
            {
                throw new ArgumentException($"GenerateRequest.PromptIds[{n}] has {length} tokens, PromptIds[0] has {promptLen}: prompts must be padded to one length", nameof(request));
            }
        }

        int execute = request.CutGenLen ?? request.Generation.GenLen;
        if (execute < 1 || execute > request.Generation.GenLen)
        {
            throw new ArgumentOutOfRangeException(nameof(request), request.CutGenLen, $"GenerateRequest.CutGenLen must be in [1, GenLen={request.Generation.GenLen}]");
        }

        if (request.AttentionMask is { } given)
        {
            for (int n = 0; n < prompts.Length; n++)
            {
                if (given.IsDefault || given.Length != prompts.Length || given[n].IsDefault || given[n].Length != promptLen)
                {
                    throw new ArgumentException($"GenerateRequest.AttentionMask must be ({prompts.Length}, {promptLen}) like PromptIds; row {n} is not", nameof(request));
                }
            }
        }
    }
}
