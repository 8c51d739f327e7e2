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
from dataclasses import replace
from types import TracebackType

from broker.coordination.client import RaftClient
from broker.coordination.errors import CoordinationError, CoordinationTimeout, LockUnavailable
from broker.coordination.group_state import decode_lock_result
from broker.coordination.wire import LockEventMsg
from broker.session import BusConfig, BusSession
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
        self._grants: dict[str, int] = {}
        self._grant_cond = threading.Condition()
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._owned_session: BusSession | None = None
        raft.on_lock_event(self._on_event)

    @classmethod
    def connect(cls, bus: BusConfig, group: str, client_id: str | None = None, *, ttl_ms: int = 5000,
                retry_interval: float = 0.25, timeout: float = 10.0,
                connect_timeout: float = 10.0) -> LockClient:
        """A client with its own MQTT session (closed by :meth:`close`)."""
        cid = client_id or f"lock-{uuid.uuid4().hex[:12]}"
        session = BusSession(replace(bus, client_id=cid, device=None, clean_start=True, outbox_path=None))
        raft = RaftClient(session, group, cid, retry_interval=retry_interval, timeout=timeout)
        session.start()
        if not session.wait_connected(connect_timeout):
            session.stop(flush_timeout=0)
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
            self._owned_session.stop(flush_timeout=1.0)
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
        while True:
            remaining = deadline - time.monotonic()
            acquire = Acquire(self.session_id, name, priority, wait)
            result = self._command(acquire, timeout=max(remaining, 0.1))
            if result.status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD):
                assert result.token is not None
                return result.token
            if result.status is LockStatus.NO_SESSION:
                self.session_lost.set()
                raise LockUnavailable(f"lock session {self.session_id} is gone")
            if result.status is not LockStatus.QUEUED:
                raise LockUnavailable(f"{name}: {result.status}")
            with self._grant_cond:
                until = min(deadline, time.monotonic() + self.poll_interval)
                while name not in self._grants and time.monotonic() < until:
                    self._grant_cond.wait(until - time.monotonic())
                token = self._grants.pop(name, None)
            if token is not None and token > 0:
                return token
            if token == 0:
                raise LockUnavailable(f"{name}: wait cancelled (deadlock victim or session closed)")
            if time.monotonic() >= deadline:
                self._command(CancelWait(self.session_id, name), timeout=2.0)
                raise CoordinationTimeout(f"{name} still held by another session after {timeout} s")

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
            self._grants[event.lock_name] = event.token if event.kind == "granted" else 0
            self._grant_cond.notify_all()
