"""What a RaftNode asks its driver to do: the etcd-style ``Ready`` batch.

The driver MUST handle each batch, in order, like this:

1. it MAY send ``early_messages`` at once: a leader's AppendRequests, which
   Raft lets leave before the leader's own write (thesis 10.2.1; the node only
   puts them here in a term whose vote is already durable);
2. persist ``snapshot`` (if set: it replaces the stored log with ``entries``),
   else the ``entries`` (they replace the stored log from ``entries[0].index`` on),
   then ``hard_state`` — and fsync;
3. call ``node.advance(ready)``: only now does a leader count its own log toward
   a commit quorum (so advance may commit: drain ``ready()`` again);
4. only then send ``messages`` and ``replies``.

Exception, etcd's ``MustSync``: when ``must_sync`` is False the batch changes
nothing but the commit index (no entries, no snapshot, the same term and vote
as the batch before). The commit index is volatile in Raft (a restarted node
relearns it from the leader), so the driver may write such a batch without an
fsync and send its ``messages`` and ``replies`` before writing it (still after
every earlier batch's write); a crash that loses it does no harm.

A vote or an append acknowledgement that leaves the node before its state is
durable can be forgotten by a crash, and then a node votes twice in a term or
a leader counts an entry that is not there. ``applied`` and ``events`` are
reports; the node has already applied the entries to the injected state machine.

A driver may call ``ready()`` again while earlier batches are still being
written (an asynchronous disk) as long as the writes complete, and ``advance``
and the sends of steps 3-4 happen, in batch order.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.raft.messages import Entry, EntryKind, HardState, Message, Snapshot


def must_sync(hard_state: HardState | None, previous: HardState, entries: int, snapshot: bool) -> bool:
    """Must a batch be fsync'd before its messages leave (etcd's ``MustSync``)?

    Yes when it carries entries or a snapshot, or changes the term or the vote
    relative to ``previous``, the hard state of the batch before; a batch that
    moves only the commit index need not be.

    >>> must_sync(HardState(2, "a", 7), HardState(2, "a", 5), entries=0, snapshot=False)
    False
    >>> must_sync(HardState(2, "b", 5), HardState(2, None, 5), entries=0, snapshot=False)
    True
    """
    if entries or snapshot:
        return True
    if hard_state is None:
        return False
    return hard_state.term != previous.term or hard_state.voted_for != previous.voted_for


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The result of a client's command, sent by the leader that applied it."""

    client_id: str
    request_seq: int
    index: int
    result: bytes
    leader: str


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One committed entry as the node applied it; ``duplicate`` means the command was not re-run."""

    index: int
    term: int
    kind: EntryKind
    command: bytes
    client_id: str
    request_seq: int
    result: bytes | None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class BecameLeader:
    term: int
    node: str


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """This node now believes ``leader`` (None: unknown) leads ``term``."""

    term: int
    leader: str | None


@dataclass(frozen=True, slots=True)
class MembersChanged:
    members: tuple[str, ...]


Event = BecameLeader | LeaderChanged | MembersChanged


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of effects; see the module docstring for the order rule.

    ``messages`` wait for the write; ``early_messages`` need not (a leader's appends).
    ``must_sync`` False: nothing but the commit index changed; the write needs no
    fsync and ``messages`` need not wait for it. Left at its default (True) by
    whoever builds a Ready by hand, the safe choice.
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    replies: tuple[ClientReply, ...] = ()
    applied: tuple[AppliedEntry, ...] = ()
    events: tuple[Event, ...] = ()
    early_messages: tuple[Message, ...] = ()
    must_sync: bool = True

    @property
    def empty(self) -> bool:
        return not (
            self.hard_state or self.snapshot or self.entries or self.messages or self.replies
            or self.applied or self.events or self.early_messages
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """The leader appended the command; a ClientReply follows once it is applied."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class NotLeader:
    """Retry at ``leader_hint`` (None: no leader known; try another node later)."""

    leader_hint: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The leader refused the proposal for ``reason``; retrying later may succeed."""

    reason: str


ProposeResult = Accepted | NotLeader | Rejected
