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
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import NoReturn

from broker.coordination.client import RaftClient
from broker.coordination.transport import PeerTransport
from broker.session import BusConfig
from protocols.coordination.group_state import decode_lock_result
from protocols.coordination.wire import LockEventMsg
from protocols.locks import (
    Acquire,
    CancelWait,
    CloseSession,
    Command,
    KeepAlive,
    LockResult,
    LockStatus,
    OpenSession,
    Release,
    encode_command,
)
from schemas.errors import CoordinationError, CoordinationTimeout, DeadlockVictim, LockUnavailable

__all__ = ["LockClient"]

logger = logging.getLogger(__name__)


class LockClient:
    """Acquire, hold and release named locks with fencing tokens (thread-safe)."""

    def __init__(self, raft: RaftClient, *, ttl_ms: int = 5000, poll_interval: float = 0.5) -> None:
        self.raft = raft
        self.ttl_ms = ttl_ms
        self.poll_interval = poll_interval
        self.session_id = raft.client_id
        self.session_lost = threading.Event()
        self._opened = False
        self._grants: dict[str, tuple[int, str]] = {}  # lock -> (token, or 0 if cancelled; reason)
        self._grant_cond = threading.Condition()
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._owned_session: PeerTransport | None = None
        raft.on_lock_event(self._on_event)

    @classmethod
    def connect(cls, bus: BusConfig, group: str, client_id: str | None = None, *, ttl_ms: int = 5000,
                retry_interval: float = 0.25, timeout: float = 10.0,
                connect_timeout: float = 10.0) -> LockClient:
        """A client with its own MQTT session (closed by :meth:`close`)."""
        cid = client_id or f"lock-{uuid.uuid4().hex[:12]}"
        session = PeerTransport(bus, cid)  # requests are retried until answered: no outbox needed
        raft = RaftClient(session, group, cid, retry_interval=retry_interval, timeout=timeout)
        session.start()
        if not session.wait_connected(connect_timeout):
            session.stop()
            raise CoordinationError(f"cannot reach the broker at {bus.host}:{bus.port}")
        client = cls(raft, ttl_ms=ttl_ms)
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

    # -- locks --------------------------------------------------------------------------------

    def acquire(self, name: str, *, timeout: float = 10.0, wait: bool = True, priority: int = 0) -> int:
        """Block until ``name`` is granted; its fencing token (LockUnavailable / CoordinationTimeout)."""
        if not self._opened:
            self.open()
        deadline = time.monotonic() + timeout
        with self._grant_cond:
            self._grants.pop(name, None)
        queued = False
        while True:
            remaining = deadline - time.monotonic()
            # Once queued, a poll must not queue us again: if our wait was cancelled meanwhile (a
            # deadlock victim), a waiting Acquire would re-enter the queue and could close the same
            # cycle a second time. A non-waiting Acquire answers QUEUED while we still wait.
            acquire = Acquire(self.session_id, name, priority, wait and not queued)
            result = self._command(acquire, timeout=max(remaining, 0.1))
            if result.status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD):
                assert result.token is not None
                return result.token
            if result.status is LockStatus.NO_SESSION:
                self.session_lost.set()
                raise LockUnavailable(f"lock session {self.session_id} is gone")
            if result.status is LockStatus.DEADLOCK:
                raise DeadlockVictim(f"{name}: waiting would deadlock and session {self.session_id} was "
                                     f"chosen as the victim; its waits are cancelled (release and retry)")
            if queued and result.status is LockStatus.BUSY:  # no longer waiting: cancelled
                self._raise_cancelled(name, self._wait_event(name, time.monotonic() + 0.5)[1])
            if result.status is not LockStatus.QUEUED:
                raise LockUnavailable(f"{name}: {result.status}")
            queued = True
            token, reason = self._wait_event(name, min(deadline, time.monotonic() + self.poll_interval))
            if token is not None and token > 0:
                return token
            if token == 0:
                self._raise_cancelled(name, reason)
            if time.monotonic() >= deadline:
                self._command(CancelWait(self.session_id, name), timeout=2.0)
                raise CoordinationTimeout(f"{name} still held by another session after {timeout} s")

    def _wait_event(self, name: str, until: float) -> tuple[int | None, str]:
        """The grant (token) or cancellation (0, reason) pushed for ``name`` by ``until``, else (None, "")."""
        with self._grant_cond:
            while name not in self._grants and time.monotonic() < until:
                self._grant_cond.wait(until - time.monotonic())
            return self._grants.pop(name, (None, ""))

    def _raise_cancelled(self, name: str, reason: str) -> NoReturn:
        if reason == "deadlock":
            raise DeadlockVictim(f"{name}: wait cancelled: session {self.session_id} was chosen as the "
                                 f"victim of a deadlock (release a lock and retry)")
        raise LockUnavailable(f"{name}: wait cancelled ({reason or 'no longer queued'})")

    def release(self, name: str, token: int) -> bool:
        """True if released; False if the lock was no longer ours (lease lapsed, token stale)."""
        result = self._command(Release(self.session_id, name, token))
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
            self._grants[event.lock_name] = (token, event.reason)
            self._grant_cond.notify_all()
