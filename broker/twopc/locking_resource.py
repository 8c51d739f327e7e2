"""LockingResource: a resource that takes named locks for its transaction while it prepares.

::

    locks = LockClient.connect(bus, "coord", poll_interval=0.1)
    resource = LockingResource(camera_table, locks, names_of=lambda work: json.loads(work)["cameras"],
                               intents=LockIntentStore(state_dir / "lock-intents.db"))
    ParticipantDriver(session, "coord", "agent-a", resource, store).start()

The locks are taken in the lock-table session whose id IS the transaction id,
so what several participants take for one transaction is one node of the
lock service's wait-for graph. Two transactions that take locks in opposite
orders through different participants then form a cycle the lock service
finds as it closes; the victim's participant votes no with the service's own
account of the cycle (``deadlock (victim tx-b): tx-b waits for camera-7 behind
tx-a, ...``), which becomes the transaction's abort reason, and the other
transaction goes on once the victim's decision releases its locks.

A transaction's locks here:

* **prepare**: record the names (:class:`LockIntentStore`), open the session
  (the first participant opens it, the others find it), take the names in
  the order ``names_of`` gives, each waiting up to the prepare deadline, then
  prepare the inner resource. A refusal (deadlock victim, deadline, the
  lock service unreachable, the inner resource says no) lets go of what this
  participant took before it answers.
* **in doubt**: held.
* **finish**: the inner resource applies the decision first, then the locks go,
  so the work is never unguarded before it is applied. A release that fails
  raises (the driver applies the decision again later), so nothing is
  acknowledged with its locks still taken.

Leases, the choice made here: the transaction's session has a long TTL
(``ttl_ms``, default 2 minutes) AND every participant keeps it alive (every
``ttl_ms / 4``) from when it opens it until it let go of its locks. So a live
participant in doubt keeps its locks however long the decision takes (a lease
cannot lapse under work the group may still commit); a participant that
crashes keeps them ``ttl_ms`` past the last keepalive of any participant of
the transaction, and one restarted within that finds its intents, keeps them
alive again and lets go of them once the decision is applied (at once, as an
abort, for work it never voted on). Only a participant down longer than
``ttl_ms`` while in doubt loses them (logged, counted in ``lost_sessions``):
another transaction may then take them before this decision is applied here.
So set ``ttl_ms`` above the longest restart expected; what a long TTL costs is
that the locks of a participant that died for good stay taken that long. A
short TTL with keepalives alone would hand the locks on during the crash that
two-phase commit is there to survive; a TTL without keepalives would bound how
long a participant may stay in doubt. Every participant should use the same
``ttl_ms``: the session keeps the TTL of whoever opened it.

Limits: participants of one transaction must name different locks (a lock
belongs to the transaction, so the first participant to finish would release
it for both). The session itself, empty once every participant let go, lapses
``ttl_ms`` after the last keepalive: only the group knows when the last
participant is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from broker.twopc.lock_intents import LockIntentStore
from broker.twopc.resource import PrepareAnswer, Resource
from protocols.twopc import Outcome
from schemas.errors import CoordinationError, DeadlockVictim, LockError

__all__ = ["LockingResource", "TxLocks"]

logger = logging.getLogger(__name__)


class TxLocks(Protocol):
    """What :class:`LockingResource` needs of the lock service (:class:`~broker.coordination.LockClient`)."""

    def open_session(self, session_id: str, ttl_ms: int) -> None: ...

    def keep_alive(self, session_id: str) -> bool: ...

    def acquire(self, name: str, *, timeout: float = ..., wait: bool = ..., priority: int = ...,
                session_id: str | None = ...) -> int: ...

    def release(self, name: str, token: int, *, session_id: str | None = ...) -> bool: ...

    def relinquish(self, name: str, *, session_id: str | None = ...) -> bool: ...


@dataclass(slots=True)
class _TxState:
    names: list[str]
    tokens: dict[str, int] = field(default_factory=dict)  # granted here; 0: before a restart (unknown)
    session_open: bool = False  # kept alive from here
    recovered: bool = False  # found in the intent store at start
    finished: bool = False  # the decision was applied here (a prepare still running must let go)


class LockingResource:
    """Wraps ``inner``: prepare takes ``names_of(payload)`` for the transaction first (see the module doc)."""

    def __init__(self, inner: Resource, locks: TxLocks, names_of: Callable[[bytes], Iterable[str]], *,
                 intents: LockIntentStore | None = None, ttl_ms: int = 120_000, priority: int = 0,
                 keepalive_s: float | None = None) -> None:
        self.inner = inner
        self.locks = locks
        self.names_of = names_of
        self.ttl_ms = ttl_ms
        self.priority = priority
        self.keepalive_s = keepalive_s if keepalive_s is not None else ttl_ms / 4000
        self.lost_sessions = 0
        self._owned_intents = intents is None
        self.intents = intents if intents is not None else LockIntentStore()
        self._mutex = threading.Lock()
        self._txs: dict[str, _TxState] = {
            tx: _TxState(names, dict.fromkeys(names, 0), session_open=True, recovered=True)
            for tx, names in self.intents.load().items()
        }
        if self._txs:
            logger.info("locks of %d transaction(s) taken before a restart: keeping them alive until "
                        "their decisions are applied: %s", len(self._txs), ", ".join(self._txs))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="tx-lock-keepalive", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop keeping sessions alive (locks still held lapse with their lease; a restart takes them up)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self._owned_intents:
            self.intents.close()

    def holding(self) -> dict[str, tuple[str, ...]]:
        """Transaction id -> the locks this participant holds (or may hold, after a restart) for it."""
        with self._mutex:
            return {tx: tuple(s.tokens) for tx, s in self._txs.items() if s.tokens}

    # ---- Resource --------------------------------------------------------------------------------

    def prepare(self, tx_id: str, payload: bytes, deadline_s: float) -> PrepareAnswer:
        try:
            names = list(dict.fromkeys(self.names_of(payload)))
        except Exception as exc:  # names_of reads work sent by others: a bad payload is a no vote
            return PrepareAnswer(False, f"cannot tell which locks to take: {exc}")
        if not names:
            return self.inner.prepare(tx_id, payload, deadline_s)
        self.intents.put(tx_id, names)  # before any lock: a restart must find what may be held
        state = _TxState(names)
        with self._mutex:
            self._txs[tx_id] = state
        pending = ""
        try:
            self.locks.open_session(tx_id, self.ttl_ms)
            state.session_open = True
            for name in names:
                remaining = deadline_s - time.monotonic()
                if remaining <= 0:
                    return self._refuse(tx_id, state, f"the prepare deadline passed before lock {name} "
                                                      f"was asked for")
                pending = name
                token = self.locks.acquire(name, session_id=tx_id, timeout=remaining, priority=self.priority)
                pending = ""
                with self._mutex:
                    state.tokens[name] = token
                    decided = state.finished
                if decided:
                    return self._refuse(tx_id, state, "decided while its locks were being taken")
        except DeadlockVictim as exc:  # the lock service cancelled this transaction's waits
            logger.info("%s: refused as a deadlock victim: %s", tx_id, exc)
            return self._refuse(tx_id, state, str(exc))
        except (CoordinationError, LockError) as exc:
            if pending:  # a wait may be left queued (no answer from the group, a cancel that got lost)
                self._relinquish_quietly(tx_id, pending)
            what = f"lock {pending}" if pending else f"lock session {tx_id}"
            logger.info("%s: refused: %s: %s", tx_id, what, exc)
            return self._refuse(tx_id, state, f"{what}: {exc}")
        try:
            answer = self.inner.prepare(tx_id, payload, deadline_s)
        except BaseException:
            self._refuse(tx_id, state, "")
            raise  # the driver turns it into a no vote
        if not answer.ok:
            self._refuse(tx_id, state, answer.reason)
        return answer

    def finish(self, tx_id: str, outcome: Outcome) -> None:
        self.inner.finish(tx_id, outcome)  # applied first: the locks guard the work until then
        with self._mutex:
            state = self._txs.get(tx_id)
            if state is None:
                return
            state.finished = True
        try:
            self._let_go(tx_id, state, strict=True)
        except CoordinationError as exc:
            raise CoordinationError(f"{tx_id} is {outcome.value}ed here, but its locks are not released "
                                    f"yet: {exc}") from exc

    def prepared_ids(self) -> Iterable[str]:
        """The inner resource's, and transactions whose locks were taken before a restart (each gets a
        decision, or an abort if it never got a vote, and so lets go of its locks)."""
        with self._mutex:
            recovered = [tx for tx, s in self._txs.items() if s.recovered]
        return sorted({*self.inner.prepared_ids(), *recovered})

    # ---- letting go ------------------------------------------------------------------------------

    def _refuse(self, tx_id: str, state: _TxState, reason: str) -> PrepareAnswer:
        """Let go of what this prepare took, then answer no (the lock service's word as the reason)."""
        self._let_go(tx_id, state, strict=False)
        return PrepareAnswer(False, reason or "refused")

    def _let_go(self, tx_id: str, state: _TxState, *, strict: bool) -> None:
        """Release every lock ``state`` holds; ``strict``: raise on the first failure, keeping the rest."""
        with self._mutex:
            held = list(state.tokens.items())
        for name, token in held:
            try:
                if token:
                    self.locks.release(name, token, session_id=tx_id)  # False: lapsed meanwhile, gone anyway
                else:
                    self.locks.relinquish(name, session_id=tx_id)
            except (CoordinationError, LockError) as exc:
                if strict:
                    raise CoordinationError(f"releasing {name}: {exc}") from exc
                logger.warning("cannot release lock %s of %s (%s): it lapses with the session's lease",
                               name, tx_id, exc)
            with self._mutex:
                state.tokens.pop(name, None)
        with self._mutex:
            if self._txs.get(tx_id) is state:
                del self._txs[tx_id]
        self.intents.delete(tx_id)

    def _relinquish_quietly(self, tx_id: str, name: str) -> None:
        try:
            self.locks.relinquish(name, session_id=tx_id)
        except (CoordinationError, LockError) as exc:
            logger.warning("cannot withdraw the wait of %s for %s (%s): it lapses with the session's lease",
                           tx_id, name, exc)

    # ---- leases ----------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        """Renew every session this participant holds or waits in: at once (after a restart), then
        every ``keepalive_s``."""
        while True:
            with self._mutex:
                sessions = [tx for tx, s in self._txs.items() if s.session_open]
            for tx_id in sessions:
                if self._stop.is_set():
                    return
                try:
                    alive = self.locks.keep_alive(tx_id)
                except (CoordinationError, LockError) as exc:
                    logger.warning("keepalive of the lock session of %s failed: %s", tx_id, exc)
                    continue
                if not alive:
                    self._session_lost(tx_id)
            if self._stop.wait(self.keepalive_s):
                return

    def _session_lost(self, tx_id: str) -> None:
        with self._mutex:
            state = self._txs.get(tx_id)
            if state is None or not state.session_open:
                return  # let go of meanwhile: nothing lost
            state.session_open = False
            self.lost_sessions += 1
        logger.error("the lock session of %s lapsed while this participant still guards its work "
                     "(down or cut off longer than its %d ms TTL?): its locks %s were free for others",
                     tx_id, self.ttl_ms, ", ".join(state.names))
