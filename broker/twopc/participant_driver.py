"""ParticipantDriver: one two-phase commit participant bound to MQTT, the wall clock and its disk.

One thread owns the :class:`~protocols.twopc.Participant` and carries out its
effects in order (protocols/twopc/effects.py): a ``Persist`` is on disk
(:class:`ParticipantStore`, fsync'd) before the vote after it is published,
and a decision is applied to the resource before it is recorded and
acknowledged. Handlers on the network thread only decode and queue. The
resource's ``prepare`` runs on a small worker pool, because it may wait (for a
row lock, a lock from the lock service) and the participant must keep
answering meanwhile; its answer comes back through the queue.

If the resource fails to apply a decision (the database is down), the driver
forgets its in-memory state and starts again from the store, exactly as after
a crash: the transaction is still in doubt on disk, the participant asks the
group, and applies the answer when the resource is back. Nothing is
acknowledged that was not applied.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from broker.router import ReceivedMessage
from broker.twopc.participant_store import ParticipantStore
from broker.twopc.resource import PrepareAnswer, Resource
from protocols.twopc import (
    ApplyOutcome,
    Delete,
    Effect,
    InputError,
    Outcome,
    Participant,
    ParticipantConfig,
    Persist,
    Prepare,
    PrepareResource,
    Send,
    TxMessage,
)
from protocols.twopc.messages import TX_MESSAGE_TYPES
from protocols.twopc.topics import TxTopics
from schemas.errors import CodecError, EdgebusError, StorageError
from schemas.messages import decode_record, encode_record
from schemas.topics import TopicTree

__all__ = ["ParticipantDriver", "TxSession"]

logger = logging.getLogger(__name__)


class TxSession(Protocol):
    """What the drivers need of a bus connection (a BusSession or a coordination PeerTransport)."""

    topics: TopicTree

    def subscribe(self, topic_filter: str, handler: Callable[[ReceivedMessage], None], /) -> object: ...

    def publish(self, topic: str, payload: bytes | str, /, *, qos: int = ..., retain: bool = ...) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Prepared:
    tx_id: str
    answer: PrepareAnswer


_Input = TxMessage | _Prepared


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ParticipantDriver:
    """Runs participant ``participant_id`` of ``group`` for ``resource`` until :meth:`stop`."""

    def __init__(self, session: TxSession, group: str, participant_id: str, resource: Resource,
                 store: ParticipantStore, *, config: ParticipantConfig | None = None,
                 tick_s: float = 0.1, prepare_workers: int = 4) -> None:
        self.session = session
        self.topics = TxTopics(session.topics, group)
        self.id = participant_id
        self.resource = resource
        self.store = store
        self._config = config
        self._tick_s = tick_s
        self.counters: Counter[str] = Counter()
        self.failed: BaseException | None = None
        self.participant = Participant(participant_id, group, store.load(), config)
        self._inputs: queue.SimpleQueue[_Input] = queue.SimpleQueue()
        self._deadlines: dict[str, int] = {}  # tx -> the Prepare's deadline (leader ms)
        self._pool = ThreadPoolExecutor(prepare_workers, thread_name_prefix=f"tx-prepare-{participant_id}")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered = False
        self.applied: list[tuple[str, Outcome]] = []  # decisions applied to the resource, in order

    @property
    def recovered(self) -> bool:
        """The start-up recovery ran (what the store and the resource held is being resolved)."""
        return self._recovered

    def start(self) -> ParticipantDriver:
        self.session.subscribe(self.topics.to(self.id), self._on_message)
        self._thread = threading.Thread(target=self._run, name=f"tx-participant-{self.id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def in_doubt(self) -> tuple[str, ...]:
        return self.participant.in_doubt()

    # ---- network thread ----------------------------------------------------------------------

    def _on_message(self, msg: ReceivedMessage) -> None:
        try:
            record = decode_record(msg.payload)
        except CodecError as exc:
            self._dead_letter("malformed", "", f"{msg.topic}: {exc}")
            return
        if not isinstance(record, TX_MESSAGE_TYPES):
            self._dead_letter("not_a_tx_message", "", f"{record.TYPE} on {msg.topic}")
            return
        self._inputs.put(record)

    # ---- the participant's thread ------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                if not self._recovered:
                    self._recover()
                    if not self._recovered:
                        continue
                try:
                    item = self._inputs.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is not None:
                    self._handle(item)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_s
                    self._execute(self.participant.tick(now_ms()))
        except Exception as exc:  # the thread must not die silently
            logger.exception("two-phase commit participant %s stopped", self.id)
            self.failed = exc

    def _recover(self) -> None:
        """After a start or a resource failure: from the durable records and what the resource holds.

        A resource that cannot be read yet (the database is still starting) is tried again every
        second; meanwhile nothing is answered, so nothing is promised."""
        try:
            prepared = list(self.resource.prepared_ids())
        except (EdgebusError, OSError) as exc:
            self.counters["recover_failed"] += 1
            logger.warning("participant %s: cannot read the resource's prepared work yet: %s", self.id, exc)
            self._stopping.wait(1.0)
            return
        self._recovered = True
        effects = self.participant.recover(now_ms(), prepared)
        if prepared or self.participant.in_doubt():
            logger.info("participant %s: recovering; prepared in the resource: %s; in doubt: %s", self.id,
                        ", ".join(prepared) or "none", ", ".join(self.participant.in_doubt()) or "none")
        self._execute(effects)

    def _handle(self, item: _Input) -> None:
        now = now_ms()
        if isinstance(item, _Prepared):
            self._deadlines.pop(item.tx_id, None)
            self._execute(self.participant.resource_prepared(item.tx_id, item.answer.ok, item.answer.reason,
                                                             now))
            return
        if isinstance(item, Prepare):
            self._deadlines[item.tx_id] = item.deadline_ms
        self._execute(self.participant.receive(item, now))

    def _execute(self, effects: list[Effect]) -> None:
        for i, e in enumerate(effects):
            if isinstance(e, Send):
                self.session.publish(self.topics.group_inbox(self.id), encode_record(e.message), qos=1)
                self.counters[f"sent_{e.message.TYPE}"] += 1
            elif isinstance(e, Persist):
                self.store.put(e.record)  # StorageError ends the thread: nothing after it is sent
            elif isinstance(e, Delete):
                self.store.delete(e.tx_id)
            elif isinstance(e, PrepareResource):
                self._start_prepare(e)
            elif isinstance(e, ApplyOutcome):
                if not self._finish(e):
                    logger.warning("participant %s: %d effects after the failed apply dropped; "
                                   "starting again from the store", self.id, len(effects) - i - 1)
                    self._reset()
                    return
            elif isinstance(e, InputError):
                self._dead_letter(e.code, e.tx_id, e.detail)

    def _start_prepare(self, e: PrepareResource) -> None:
        deadline_ms = self._deadlines.get(e.tx_id, now_ms())
        deadline_s = time.monotonic() + max(0.0, (deadline_ms - now_ms()) / 1000)

        def work() -> None:
            try:
                answer = self.resource.prepare(e.tx_id, e.payload, deadline_s)
            except Exception as exc:  # a resource bug must become a no vote, not a silent hang
                logger.exception("participant %s: prepare of %s failed", self.id, e.tx_id)
                answer = PrepareAnswer(False, f"prepare failed: {exc}"[:256])
            self._inputs.put(_Prepared(e.tx_id, answer))

        self.counters["prepares"] += 1
        self._pool.submit(work)

    def _finish(self, e: ApplyOutcome) -> bool:
        try:
            self.resource.finish(e.tx_id, e.outcome)
        except (EdgebusError, OSError) as exc:
            self.counters["finish_failed"] += 1
            logger.warning("participant %s: cannot %s %s yet: %s", self.id, e.outcome.value, e.tx_id, exc)
            return False
        self.counters[f"applied_{e.outcome.value}"] += 1
        if len(self.applied) < 10_000:
            self.applied.append((e.tx_id, e.outcome))
        return True

    def _reset(self) -> None:
        """Forget the in-memory state; the next turn recovers from the store (as after a crash)."""
        try:
            records = self.store.load()
        except StorageError:
            raise
        self.participant = Participant(self.id, self.topics.group, records, self._config)
        self._recovered = False
        self._stopping.wait(1.0)  # the resource failed just now: do not spin on it

    def _dead_letter(self, code: str, tx_id: str, detail: str) -> None:
        self.counters[f"refused_{code}"] += 1
        logger.warning("participant %s refused input (%s) tx=%s: %s", self.id, code, tx_id or "-", detail)
        body = {"code": code, "tx": tx_id, "detail": detail[:512], "participant": self.id,
                "time_ms": now_ms()}
        self.session.publish(self.topics.dead_letters(), json.dumps(body), qos=1)
