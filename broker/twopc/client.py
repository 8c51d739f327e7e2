"""TxClient: run a two-phase commit transaction through a Raft group and wait for its outcome.

::

    client = TxClient(session, "coord")
    with client.transaction(timeout_s=5) as t:
        t.enlist("agent-a", release_camera_7)
        t.enlist("agent-b", take_camera_7)
    # here: committed everywhere it will be (else TxAborted with the reason)

The client sends a :class:`~protocols.twopc.BeginRequest` to the group and
sends it again every ``retry_s`` until a :class:`~protocols.twopc.Decision`
arrives (the group answers a repeat with the outcome, so a retry after a
leader crash can neither begin the transaction twice nor lose the answer).
The decision is sent only once it is in the group's log, so a commit the
client hears is final. A client that gives up waiting (no majority) raises
:class:`~schemas.errors.CoordinationTimeout` naming the transaction: the
outcome is still decided by the group, and ``edge-bus tx status ID`` tells it.

:class:`AsyncTxClient` is the same for asyncio code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from broker.router import ReceivedMessage
from broker.twopc.participant_driver import TxSession
from protocols.twopc import BeginRequest, Decision, Outcome, Part, StatusQuery, StatusReply
from protocols.twopc.messages import MAX_PARTICIPANTS, check_id
from protocols.twopc.topics import TxTopics
from schemas.errors import CodecError, CoordinationError, CoordinationTimeout, TxAborted, TxError
from schemas.messages import decode_record, encode_record

__all__ = ["AsyncTxClient", "Transaction", "TxClient", "TxOutcome"]

_SLACK_S = 5.0  # how long past the transaction's timeout the client waits for the group's word


@dataclass(frozen=True, slots=True)
class TxOutcome:
    tx_id: str
    outcome: Outcome
    reason: str = ""

    @property
    def committed(self) -> bool:
        return self.outcome is Outcome.COMMIT


@dataclass
class Transaction:
    """The parts of one transaction, collected by :meth:`enlist` before it runs."""

    tx_id: str
    timeout_s: float
    parts: list[Part] = field(default_factory=list)
    result: TxOutcome | None = None

    def enlist(self, participant: str, payload: bytes = b"") -> None:
        """Add ``participant`` with the work it must prepare (its resource reads ``payload``)."""
        check_id("participant", participant)
        if any(p.participant == participant for p in self.parts):
            raise TxError(f"{participant} is already enlisted in {self.tx_id}: one part per participant")
        if len(self.parts) >= MAX_PARTICIPANTS:
            raise TxError(f"a transaction has at most {MAX_PARTICIPANTS} participants")
        self.parts.append(Part(participant, payload))


class TxClient:
    """Thread-safe; many transactions may be in flight at once (one per calling thread)."""

    def __init__(self, session: TxSession, group: str, client_id: str | None = None, *,
                 retry_s: float = 0.5) -> None:
        self.session = session
        self.topics = TxTopics(session.topics, group)
        self.client_id = check_id("client", client_id or f"txc-{uuid.uuid4().hex[:12]}")
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._decisions: dict[str, Decision] = {}
        self._replies: dict[str, StatusReply] = {}
        self._waiting: set[str] = set()
        self.retries = 0
        session.subscribe(self.topics.to(self.client_id), self._on_message)

    def new_id(self) -> str:
        return f"{self.client_id}-{uuid.uuid4().hex[:16]}"

    @contextlib.contextmanager
    def transaction(self, timeout_s: float = 5.0, tx_id: str | None = None) -> Iterator[Transaction]:
        """Collect parts in the block; on a clean exit run the transaction and raise :class:`TxAborted`
        if the group aborted it. An exception inside the block runs nothing."""
        t = Transaction(check_id("tx_id", tx_id or self.new_id()), timeout_s)
        yield t
        t.result = self.run(t.parts, timeout_s, t.tx_id)
        if not t.result.committed:
            raise TxAborted(t.tx_id, t.result.reason)

    def run(self, parts: list[Part], timeout_s: float = 5.0, tx_id: str | None = None) -> TxOutcome:
        """Run one transaction to its decision (commit or abort; aborts are not raised here)."""
        if not parts:
            raise TxError("a transaction needs at least one participant")
        if not 0 < timeout_s <= 3600:
            raise TxError(f"timeout_s must be in (0, 3600], not {timeout_s!r}")
        tx = check_id("tx_id", tx_id or self.new_id())
        begin = BeginRequest(tx, self.client_id, int(timeout_s * 1000), tuple(parts))
        decision = self._ask(tx, encode_record(begin), self._decisions, timeout_s + _SLACK_S)
        if decision is None:
            raise CoordinationTimeout(
                f"no decision for transaction {tx} from group {self.topics.group!r} within "
                f"{timeout_s + _SLACK_S:g} s (is a majority of the group running?); the group still "
                f"decides it: `edge-bus tx status {tx}`")
        assert isinstance(decision, Decision)
        return TxOutcome(tx, decision.outcome, decision.reason)

    def status(self, tx_id: str, timeout_s: float = 5.0) -> StatusReply:
        """What the group's log says of ``tx_id`` (an id it never began is recorded aborted)."""
        check_id("tx_id", tx_id)
        query = encode_record(StatusQuery(tx_id, self.client_id))
        reply = self._ask(tx_id, query, self._replies, timeout_s)
        if reply is None:
            raise CoordinationTimeout(f"no answer about {tx_id} from group {self.topics.group!r} "
                                      f"within {timeout_s:g} s")
        assert isinstance(reply, StatusReply)
        return reply

    def _ask(self, tx_id: str, payload: bytes, answers: dict[str, Decision] | dict[str, StatusReply],
             timeout_s: float) -> Decision | StatusReply | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if tx_id in self._waiting:
                raise TxError(f"{tx_id} is already being waited for by this client")
            self._waiting.add(tx_id)
            answers.pop(tx_id, None)
        try:
            while True:
                if not self.session.publish(self.topics.group_inbox(self.client_id), payload, qos=1):
                    raise CoordinationError("the session refused to publish the request")
                resend = min(deadline, time.monotonic() + self.retry_s)
                with self._cond:
                    while tx_id not in answers and time.monotonic() < resend:
                        self._cond.wait(resend - time.monotonic())
                    if tx_id in answers:
                        return answers.pop(tx_id)
                if time.monotonic() >= deadline:
                    return None
                self.retries += 1
        finally:
            with self._cond:
                self._waiting.discard(tx_id)
                answers.pop(tx_id, None)

    def _on_message(self, msg: ReceivedMessage) -> None:
        try:
            record = decode_record(msg.payload)
        except CodecError:
            return
        if not isinstance(record, (Decision, StatusReply)):
            return
        with self._cond:
            if record.tx_id not in self._waiting:
                return  # a late or repeated answer nobody waits for
            if isinstance(record, Decision):
                self._decisions[record.tx_id] = record
            else:
                self._replies[record.tx_id] = record
            self._cond.notify_all()


class AsyncTxClient:
    """:class:`TxClient` for asyncio: the waiting happens on a worker thread, never on the loop."""

    def __init__(self, client: TxClient) -> None:
        self.client = client

    @contextlib.asynccontextmanager
    async def transaction(self, timeout_s: float = 5.0,
                          tx_id: str | None = None) -> AsyncIterator[Transaction]:
        t = Transaction(check_id("tx_id", tx_id or self.client.new_id()), timeout_s)
        yield t
        t.result = await self.run(t.parts, timeout_s, t.tx_id)
        if not t.result.committed:
            raise TxAborted(t.tx_id, t.result.reason)

    async def run(self, parts: list[Part], timeout_s: float = 5.0, tx_id: str | None = None) -> TxOutcome:
        return await asyncio.to_thread(self.client.run, parts, timeout_s, tx_id)

    async def status(self, tx_id: str, timeout_s: float = 5.0) -> StatusReply:
        return await asyncio.to_thread(self.client.status, tx_id, timeout_s)
