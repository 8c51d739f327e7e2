"""LockClient: the client side of the replicated lock table.

    with LockClient.connect(bus_config, "site") as locks:
        with locks.hold("camera-7/ptz") as token:       # sync
            resource.write(..., fence=token)
        async with locks.lock("camera-7/ptz") as token:  # asyncio
            ...

Opening a client opens a lock-table session with a TTL and keeps it alive from
a background thread; every lock it holds lives exactly as long as that session
(etcd's model). If keepalives stop (the process is paused or cut off) the lease
lapses and the lock goes to the next waiter under a HIGHER fencing token, so a
resource that checks tokens (:class:`protocols.locks.FencedResource`) refuses
the paused holder's late writes. :attr:`LockClient.session_lost` tells the
holder it must stop.

A client may also act for a session it did not open (``session_id=``): a
two-phase commit participant takes locks on behalf of its TRANSACTION (the
session id is the transaction id, opened with :meth:`LockClient.open_session`
by whichever participant comes first), so the locks that several processes
take for one transaction are one node of the wait-for graph. Such a session is
kept alive by whoever acts for it (:meth:`LockClient.keep_alive`), not by this
client's thread; and since the leader pushes grants and cancellations only to
``reply/{session}``, which nobody subscribes to, waits for it are noticed by
polling every ``poll_interval``.

A deadlock victim's :class:`DeadlockVictim` names the cycle as the lock
service reported it on the group's events topic (``deadlock (victim tx-b): tx-b
waits for camera-7 behind tx-a, tx-a waits for camera-8 behind tx-b``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import NoReturn

from broker.coordination.client import RaftClient
from broker.coordination.transport import PeerTransport
from broker.router import ReceivedMessage
from broker.session import BusConfig
from protocols.coordination.group_state import decode_lock_result
from protocols.coordination.lock_events import describe_deadlock
from protocols.coordination.wire import LockEventMsg
from protocols.locks import (
    Acquire,
    CancelWait,
    CloseSession,
    Command,
    DeadlockEvent,
    KeepAlive,
    LockResult,
    LockStatus,
    OpenSession,
    Release,
    encode_command,
)
from schemas.errors import CoordinationError, CoordinationTimeout, DeadlockVictim, LockError, LockUnavailable

__all__ = ["LockClient"]

logger = logging.getLogger(__name__)

_DEADLOCK_MEMORY = 256  # recent deadlock reports kept, by victim
_DEADLOCK_REPORT_WAIT_S = 0.5  # how long a victim waits for the report that names its cycle


class LockClient:
    """Acquire, hold and release named locks with fencing tokens (thread-safe)."""

    def __init__(self, raft: RaftClient, *, ttl_ms: int = 5000, poll_interval: float = 0.5) -> None:
        self.raft = raft
        self.ttl_ms = ttl_ms
        self.poll_interval = poll_interval
        self.session_id = raft.client_id
        self.session_lost = threading.Event()
        self._opened = False
        # (session, lock) -> (token, or 0 if cancelled; reason), as pushed to this client's session
        self._grants: dict[tuple[str, str], tuple[int, str]] = {}
        self._grant_cond = threading.Condition()
        # victim -> (when heard, monotonic; the lock service's report), the latest per victim
        self._deadlocks: OrderedDict[str, tuple[float, DeadlockEvent]] = OrderedDict()
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._owned_session: PeerTransport | None = None
        raft.on_lock_event(self._on_event)
        raft.session.subscribe(raft.topics.lock_events(), self._on_deadlock_report)

    @classmethod
    def connect(cls, bus: BusConfig, group: str, client_id: str | None = None, *, ttl_ms: int = 5000,
                retry_interval: float = 0.25, timeout: float = 10.0,
                connect_timeout: float = 10.0, poll_interval: float = 0.5) -> LockClient:
        """A client with its own MQTT session (closed by :meth:`close`)."""
        cid = client_id or f"lock-{uuid.uuid4().hex[:12]}"
        session = PeerTransport(bus, cid)  # requests are retried until answered: no outbox needed
        raft = RaftClient(session, group, cid, retry_interval=retry_interval, timeout=timeout)
        client = cls(raft, ttl_ms=ttl_ms, poll_interval=poll_interval)  # subscribes before the connection
        session.start()
        if not session.wait_connected(connect_timeout):
            session.stop()
            raise CoordinationError(f"cannot reach the broker at {bus.host}:{bus.port}")
        client._owned_session = session
        return client.open()

    # -- session ------------------------------------------------------------------------------

    def open(self) -> LockClient:
        """Open the lock-table session and start keeping it alive."""
        result = self._command(OpenSession(self.session_id, self.ttl_ms))
        if result.status not in (LockStatus.OK, LockStatus.SESSION_EXISTS):
            raise CoordinationError(f"cannot open lock session: {result.status}")
        self._opened = True
        self.session_lost.clear()
        if self._keepalive is None:
            self._keepalive = threading.Thread(target=self._keep_alive, name=f"lock-ka-{self.session_id}",
                                               daemon=True)
            self._keepalive.start()
        return self

    def close(self) -> None:
        """Close the session (releasing everything it holds) and the MQTT session if owned."""
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(timeout=2)
            self._keepalive = None
        if self._opened:
            try:
                self._command(CloseSession(self.session_id), timeout=2.0)
            except CoordinationError as exc:
                logger.warning("closing lock session %s: %s (its lease will lapse)", self.session_id, exc)
            self._opened = False
        if self._owned_session is not None:
            self._owned_session.stop()
            self._owned_session = None

    def __enter__(self) -> LockClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _keep_alive(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                result = self._command(KeepAlive(self.session_id), timeout=interval)
            except CoordinationError as exc:
                logger.warning("keepalive of %s failed: %s", self.session_id, exc)
                continue
            if result.status is LockStatus.NO_SESSION:
                logger.warning("lock session %s lapsed: every lock it held is gone", self.session_id)
                self._opened = False
                self.session_lost.set()
                return

    # -- sessions this client acts for (a transaction's) ---------------------------------------

    def open_session(self, session_id: str, ttl_ms: int) -> None:
        """Make sure session ``session_id`` exists; an existing one is kept as it is (its TTL too).

        Nobody keeps it alive but the callers of :meth:`keep_alive`: it lapses
        ``ttl_ms`` after the last one, releasing what it holds.
        """
        result = self._command(OpenSession(session_id, ttl_ms))
        if result.status not in (LockStatus.OK, LockStatus.SESSION_EXISTS):
            raise CoordinationError(f"cannot open lock session {session_id}: {result.status}")

    def keep_alive(self, session_id: str) -> bool:
        """Renew ``session_id``'s lease; False if the session is gone (lapsed or closed)."""
        return self._command(KeepAlive(session_id)).status is not LockStatus.NO_SESSION

    def relinquish(self, name: str, *, session_id: str | None = None) -> bool:
        """Stop holding or waiting for ``name`` without knowing the token (a restarted holder does this).

        True if the session held or waited for it. Learning the token takes a
        non-waiting acquire, which briefly takes ``name`` if nobody holds it
        (and gives it back at once).
        """
        sid = session_id or self.session_id
        for _ in range(3):  # a queued wait may be granted between the two commands: look again
            result = self._command(Acquire(sid, name, wait=False))
            if result.status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD):
                assert result.token is not None
                self._command(Release(sid, name, result.token))
                return result.status is LockStatus.ALREADY_HELD
            if result.status is not LockStatus.QUEUED:
                return False  # busy (held by another session) or no such session: nothing of ours
            if self._command(CancelWait(sid, name)).status is LockStatus.OK:
                return True
        raise CoordinationError(f"{name}: session {sid} kept being granted and queued; not let go")

    # -- locks --------------------------------------------------------------------------------

    def acquire(self, name: str, *, timeout: float = 10.0, wait: bool = True, priority: int = 0,
                session_id: str | None = None) -> int:
        """Block until ``name`` is granted; its fencing token (LockUnavailable / CoordinationTimeout).

        ``session_id`` acquires for that session instead of this client's own
        (opened with :meth:`open_session`); its wait is noticed by polling.
        """
        sid = session_id or self.session_id
        own = sid == self.session_id
        if own and not self._opened:
            self.open()
        started = time.monotonic()
        deadline = started + timeout
        with self._grant_cond:
            self._grants.pop((sid, name), None)
        queued = False
        while True:
            remaining = deadline - time.monotonic()
            # Once queued, a poll must not queue us again: if our wait was cancelled meanwhile (a
            # deadlock victim), a waiting Acquire would re-enter the queue and could close the same
            # cycle a second time. A non-waiting Acquire answers QUEUED while we still wait.
            acquire = Acquire(sid, name, priority, wait and not queued)
            result = self._command(acquire, timeout=max(remaining, 0.1))
            if result.status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD):
                assert result.token is not None
                return result.token
            if result.status is LockStatus.NO_SESSION:
                if own:
                    self.session_lost.set()
                raise LockUnavailable(f"lock session {sid} is gone")
            if result.status is LockStatus.DEADLOCK:
                raise self._deadlock_victim(sid, name, started)
            if queued and result.status is LockStatus.BUSY:  # no longer waiting: cancelled
                self._raise_cancelled(sid, name, started)
            if result.status is not LockStatus.QUEUED:
                raise LockUnavailable(f"{name}: {result.status}")
            queued = True
            token, reason = self._wait_event(sid, name, min(deadline, time.monotonic() + self.poll_interval))
            if token is not None and token > 0:
                return token
            if token == 0:
                self._raise_cancelled(sid, name, started, reason)
            if time.monotonic() >= deadline:
                self._command(CancelWait(sid, name), timeout=2.0)
                raise CoordinationTimeout(f"{name} still held by another session after {timeout} s")

    def _wait_event(self, sid: str, name: str, until: float) -> tuple[int | None, str]:
        """The grant (token) or cancellation (0, reason) pushed for ``name`` by ``until``, else (None, "")."""
        key = (sid, name)
        with self._grant_cond:
            while key not in self._grants and time.monotonic() < until:
                self._grant_cond.wait(until - time.monotonic())
            return self._grants.pop(key, (None, ""))

    def _raise_cancelled(self, sid: str, name: str, since: float, reason: str | None = None) -> NoReturn:
        """Our wait is gone: a deadlock (the reason pushed to us, or a report naming ``sid``), or else."""
        own = sid == self.session_id
        if reason is None and own:  # the cancellation may be on its way to us
            reason = self._wait_event(sid, name, time.monotonic() + _DEADLOCK_REPORT_WAIT_S)[1]
        # Nothing is pushed for a session we act for: the group's deadlock report tells.
        if reason == "deadlock" or (not reason and self._deadlock_report(
                sid, since, wait=0.0 if own else _DEADLOCK_REPORT_WAIT_S) is not None):
            raise self._deadlock_victim(sid, name, since)
        raise LockUnavailable(f"{name}: wait cancelled ({reason or 'no longer queued'})")

    def _deadlock_victim(self, sid: str, name: str, since: float) -> DeadlockVictim:
        """The error for a victim, naming the cycle as the lock service reported it (if heard in time)."""
        report = self._deadlock_report(sid, since, wait=_DEADLOCK_REPORT_WAIT_S)
        if report is None:
            return DeadlockVictim(f"deadlock (victim {sid}): its wait for {name} was in a wait-for cycle "
                                  f"and the lock service cancelled it")
        return DeadlockVictim(describe_deadlock(report))

    def _deadlock_report(self, victim: str, since: float, wait: float = 0.0) -> DeadlockEvent | None:
        """The report of a deadlock that chose ``victim``, heard after ``since`` (monotonic)."""
        until = time.monotonic() + wait
        with self._grant_cond:
            while True:
                heard = self._deadlocks.get(victim)
                if heard is not None and heard[0] >= since:
                    return heard[1]
                if time.monotonic() >= until:
                    return None
                self._grant_cond.wait(until - time.monotonic())

    def release(self, name: str, token: int, *, session_id: str | None = None) -> bool:
        """True if released; False if the lock was no longer ours (lease lapsed, token stale)."""
        result = self._command(Release(session_id or self.session_id, name, token))
        return result.status is LockStatus.RELEASED

    @contextmanager
    def hold(self, name: str, **kwargs: object) -> Iterator[int]:
        """``with client.hold(name) as token:`` acquire, yield the fencing token, release."""
        token = self.acquire(name, **kwargs)  # type: ignore[arg-type]
        try:
            yield token
        finally:
            if not self.session_lost.is_set():
                self.release(name, token)

    @asynccontextmanager
    async def lock(self, name: str, **kwargs: object) -> AsyncIterator[int]:
        """``async with client.lock(name) as token:`` the same, without blocking the event loop."""
        token = await asyncio.to_thread(lambda: self.acquire(name, **kwargs))  # type: ignore[arg-type]
        try:
            yield token
        finally:
            if not self.session_lost.is_set():
                await asyncio.to_thread(self.release, name, token)

    # -- plumbing -----------------------------------------------------------------------------

    def _command(self, command: Command, timeout: float | None = None) -> LockResult:
        reply = self.raft.request("lock", encode_command(command), timeout)
        return decode_lock_result(reply.result)

    def _on_event(self, event: LockEventMsg) -> None:
        with self._grant_cond:
            token = event.token if event.kind == "granted" else 0
            self._grants[(self.session_id, event.lock_name)] = (token, event.reason)
            self._grant_cond.notify_all()

    def _on_deadlock_report(self, msg: ReceivedMessage) -> None:
        """A broken deadlock, as the leader reports it on the group's events topic (JSON)."""
        try:
            body = json.loads(msg.payload)
            report = DeadlockEvent(tuple(body["cycle"]), tuple(body["locks"]), body["victim"],
                                   int(body["time_ms"]))
        except (ValueError, TypeError, KeyError, LockError) as exc:
            logger.debug("ignoring an unreadable deadlock report: %s", exc)
            return
        with self._grant_cond:
            self._deadlocks[report.victim] = (time.monotonic(), report)
            self._deadlocks.move_to_end(report.victim)
            while len(self._deadlocks) > _DEADLOCK_MEMORY:
                self._deadlocks.popitem(last=False)
            self._grant_cond.notify_all()
