namespace FlexGen.Actors.Actors.Coordination;

using Akka.Actor;
using FlexGen.Actors.Messages;

/// <summary>A request waiting its turn and whom to answer.</summary>
internal sealed record PendingRequest(GenerateRequest Request, IActorRef ReplyTo);

/// <summary>The requests waiting for the coordinator, in arrival order: the system's one request queue.</summary>
internal sealed class PendingRequests
{
    private readonly LinkedList<PendingRequest> _queue = new();

    public void Add(GenerateRequest request, IActorRef replyTo) => _queue.AddLast(new PendingRequest(request, replyTo));

    public bool TryTake(out PendingRequest next)
    {
        next = _queue.First?.Value!;
        if (next is null)
        {
            return false;
        }

        _queue.RemoveFirst();
        return true;
    }

    public bool TryRemove(Guid requestId, out PendingRequest removed)
    {
        removed = _queue.FirstOrDefault(p => p.Request.RequestId == requestId)!;
        return removed is not null && _queue.Remove(removed);
    }

    /// <summary>Empties the queue, returning what waited.</summary>
    public IReadOnlyList<PendingRequest> TakeAll()
    {
        var all = _queue.ToArray();
        _queue.Clear();
        return all;
    }
}
