"""Runs one PBFT replica over MQTT: frames in from its inbox, ticks from the clock, frames out.

The protocol core (protocols.pbft.Replica) decides everything; this binds it
to a :class:`~broker.coordination.transport.PeerTransport` (QoS 0: PBFT
retransmits what matters) on one thread, publishes evidence and status, and
calls the quarantine hooks. With a :class:`VoteJournal` (``--data``) a
restarted replica remembers what it signed, so it never contradicts itself;
it resumes from its last stable checkpoint (state transfer brings the rest).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.bft.group import BftGroup
from broker.bft.hooks import QuarantineHook
from broker.bft.journal import VoteJournal
from broker.bft.topics import BftTopics
from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.pbft import (
    Dropped,
    Ed25519Signer,
    Executed,
    Quarantined,
    Replica,
    ReplicatedStateMachine,
    ViewEntered,
    encode_frame,
)

logger = logging.getLogger(__name__)

DEAD_LETTERS_PER_S = 20


@dataclass(slots=True)
class DriverStats:
    executed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined_at: dict[str, float] = field(default_factory=dict)


class BftReplicaDriver:
    """One replica process's event loop; ``on_quarantine`` hooks run when a liar is proven."""

    def __init__(
        self, group: BftGroup, signer: Ed25519Signer, bus: BusConfig, *,
        sm: ReplicatedStateMachine | None = None, replica_class: Callable[..., Replica] = Replica,
        journal: VoteJournal | None = None,
    ) -> None:
        self.group = group
        self.id = signer.identity
        self.topics = BftTopics(bus.root, group.name)
        self.journal = journal
        durable = journal.durable() if journal is not None else None
        sm = sm or group.new_state_machine()
        self.replica = replica_class(group.pbft, sm, signer, group.verifier, durable)
        self.transport = PeerTransport(bus, f"bft-{group.name}-{self.id}")
        self.transport.subscribe(self.topics.inbox(self.id), self._on_message)
        self.on_quarantine: list[QuarantineHook] = []
        self.stats = DriverStats()
        self.quarantine_event = threading.Event()
        self._stop = threading.Event()
        self._status_due = 0.0
        self._was_in_view_change = False
        self._dl_window, self._dl_sent = 0.0, 0

    def _on_message(self, msg: ReceivedMessage) -> None:
        self.replica.receive(msg.payload)
        self._flush()

    def _flush(self) -> None:
        if self.replica.in_view_change and not self._was_in_view_change:
            st = self.replica.status()
            logger.info("%s starts a view change to view %d (executed %d, dropped %s)",
                        self.id, st.view, st.last_executed, dict(st.dropped))
        self._was_in_view_change = self.replica.in_view_change
        if self.journal is not None:  # what it signed is on disk before any of it is sent
            self.journal.record(self.replica.votes(), self.replica.view, self.replica.quarantined)
            self.journal.record_stable(*self.replica.stable_checkpoint())
        out = self.replica.drain()
        for s in out.sends:
            dsts = [r for r in self.group.pbft.replicas if r != self.id] if s.dst is None else [s.dst]
            for d in dsts:
                self.transport.publish(self.topics.inbox(d), s.frame)
        for e in out.events:
            if isinstance(e, Executed):
                self.stats.executed += len(e.results)
            elif isinstance(e, Dropped):
                self._dead_letter(e)
            elif isinstance(e, Quarantined):
                self._quarantined(e)
            elif isinstance(e, ViewEntered):
                logger.info("%s entered view %d (primary %s)", self.id, e.view, e.primary)

    def _dead_letter(self, e: Dropped) -> None:
        """Count every refused frame; publish a record for at most DEAD_LETTERS_PER_S of them a second
        (a garbage sender must not be able to turn this replica into an amplifier)."""
        self.stats.dropped[e.reason] = self.stats.dropped.get(e.reason, 0) + 1
        logger.debug("dropped a frame from %s: %s", e.sender, e.reason)
        now = time.monotonic()
        if now - self._dl_window >= 1.0:
            self._dl_window, self._dl_sent = now, 0
        if self._dl_sent < DEAD_LETTERS_PER_S:
            self._dl_sent += 1
            doc = {"replica": self.id, "reason": e.reason, "sender": e.sender, "time": time.time()}
            self.transport.publish(self.topics.dead_letter(self.id), json.dumps(doc))

    def _quarantined(self, e: Quarantined) -> None:
        logger.warning("%s quarantines %s: it signed two conflicting statements", self.id, e.offender)
        self.stats.quarantined_at[e.offender] = time.time()
        self.transport.publish(self.topics.evidence, encode_frame(e.evidence), qos=1)
        event = {"replica": self.id, "offender": e.offender, "time": self.stats.quarantined_at[e.offender],
                 "evidence": encode_frame(e.evidence).hex()}
        self.transport.publish(self.topics.quarantined(self.id), json.dumps(event), qos=1)
        self.quarantine_event.set()
        for hook in self.on_quarantine:
            try:
                hook(e.offender, e.evidence)
            except Exception:  # a hook must not stop the replica
                logger.exception("quarantine hook failed for %s", e.offender)
        self._publish_status()

    def status_doc(self) -> dict[str, object]:
        st = self.replica.status()
        return {
            "replica": st.id, "view": st.view, "primary": st.primary, "in_view_change": st.in_view_change,
            "stable_checkpoint": st.stable_checkpoint, "last_executed": st.last_executed,
            "quarantined": {
                r: {"evidence": encode_frame(ev).hex(), "since": self.stats.quarantined_at.get(r)}
                for r, ev in self.replica.quarantined.items()
            },
            "dropped": dict(st.dropped), "time": time.time(),
        }

    def _publish_status(self) -> None:
        self.transport.publish(self.topics.status(self.id), json.dumps(self.status_doc()), qos=1, retain=True)

    def run(self) -> None:
        """Serve until :meth:`stop` (from another thread or a signal handler)."""
        tick = self.group.tick_ms / 1000
        self.transport.start(threaded=False)
        next_tick = time.monotonic() + tick
        try:
            while not self._stop.is_set():
                self.transport.poll(max(0.0, next_tick - time.monotonic()))
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = max(next_tick + tick, now - tick)
                    self.replica.tick()
                    self._flush()
                if now >= self._status_due:
                    self._status_due = now + 1.0
                    self._publish_status()
        finally:
            self.transport.stop()
            if self.journal is not None:
                self.journal.close()

    def stop(self) -> None:
        self._stop.set()
