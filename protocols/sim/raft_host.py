"""One simulated Raft machine and its asynchronous disk, driven by the Ready contract.

Both simulators (:mod:`protocols.sim.cluster` and :mod:`protocols.twopc.sim`)
run their Raft nodes through :class:`ReadyDisk`, so the driver order the
checkers vouch for is written once: a Ready's early appends leave at once; its
write takes ``disk_delay`` and writes complete one at a time, in order, while
the node keeps stepping; a Ready's other messages and replies leave when its
write completes, or when its write starts if ``must_sync`` is False (as the
MQTT driver sends them before writing). A crash loses the writes in flight and
what was written without an fsync (:class:`DurableStore`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from protocols.raft.messages import Message
from protocols.raft.node import RaftNode
from protocols.raft.ready import ClientReply, Ready
from protocols.sim.clock import VirtualClock
from protocols.sim.prng import SplitMix64
from protocols.sim.storage import DurableStore

CrashPoint = Literal["mid_write", "after_persist"]


@dataclass(slots=True)
class RaftHost:
    """A simulated machine: durable storage survives crashes, the node and its disk queue do not."""

    id: str
    store: DurableStore = field(default_factory=DurableStore)
    node: RaftNode | None = None
    incarnation: int = 0
    paused_until: int = 0
    writes: deque[Ready] = field(default_factory=deque)  # the disk's queue; the head is being written

    def boot(self) -> None:
        """A new incarnation starts: whatever was being written when it crashed is lost."""
        self.incarnation += 1
        self.paused_until = 0
        self.writes = deque()

    def power_cut(self) -> None:
        """The node is gone with its writes in flight and what was not fsynced."""
        self.node, self.paused_until = None, 0
        self.writes = deque()
        self.store.crash()


H = TypeVar("H", bound=RaftHost)


class ReadyDisk(Generic[H]):
    """Carries out each host's Readys in the contract's order, on a slow disk.

    ``send`` puts messages and replies on the network; ``drain`` asks the node
    for its next Ready (``advance`` may have committed); ``crashes`` may crash
    the host at a point of the write and says whether it did.
    """

    def __init__(
        self, sched: VirtualClock, rng: SplitMix64, delay: tuple[int, int], *,
        send: Callable[[H, Sequence[Message], Sequence[ClientReply]], None],
        drain: Callable[[H], None],
        crashes: Callable[[H, CrashPoint], bool] = lambda h, point: False,
    ) -> None:
        self._sched = sched
        self._rng = rng
        self._delay = delay
        self._send = send
        self._drain = drain
        self._crashes = crashes

    def submit(self, h: H, rd: Ready) -> None:
        """Send the early appends (a leader's need not wait for its disk) and queue the write."""
        self._send(h, rd.early_messages, ())
        h.writes.append(rd)
        if len(h.writes) == 1:
            self._start_write(h)

    def _start_write(self, h: H) -> None:
        """Write the head of the disk queue; its messages leave now if it need not be synced."""
        if not h.writes[0].must_sync:
            self._send(h, h.writes[0].messages, h.writes[0].replies)
        delay = self._rng.between(*self._delay)
        incarnation = h.incarnation
        if delay == 0:
            self._write_done(h, incarnation)
        else:
            self._sched.at(self._sched.now + delay, lambda: self._write_done(h, incarnation))

    def _write_done(self, h: H, incarnation: int) -> None:
        """The head write completes: persist it, tell the node, send the rest, start the next."""
        if h.node is None or h.incarnation != incarnation:
            return  # crashed while it was in flight: lost
        if h.paused_until > self._sched.now:
            self._sched.at(h.paused_until, lambda: self._write_done(h, incarnation))
            return
        if self._crashes(h, "mid_write"):
            return  # it and the writes queued behind it are lost
        rd = h.writes[0]
        h.store.persist(rd)  # the order rule: durable first ...
        if self._crashes(h, "after_persist"):
            return  # ... so a crash here loses only messages
        h.writes.popleft()
        h.node.advance(rd)
        if rd.must_sync:
            self._send(h, rd.messages, rd.replies)
        if h.writes:
            self._start_write(h)  # with no delay it completes (or crashes) right here
        if h.node is not None and h.incarnation == incarnation:
            self._drain(h)  # advance may have committed
