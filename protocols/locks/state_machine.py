"""The lock table that runs on top of a Raft log: deterministic, one command at a time.

Each replica feeds committed entries, in log order, to ``LockStateMachine.apply``
with the time the leader stamped on the entry, and gets the same results and
events as every other replica. Nothing here reads a clock: time only moves when
an entry says so, and it never moves backwards (a new leader whose clock lags
the old one's cannot un-expire a lease; its times are clamped to the highest
seen).

Semantics, with etcd's lease model as the bar:

* A **session** has a TTL; its lease ends at ``last keepalive + ttl``. The lease
  is lapsed at any time ``t >= deadline``; a lapsed session is gone for good.
  Keepalive is the only renewal: every lock a session holds lives exactly as
  long as the session.
* A lock has at most one holder and a FIFO queue of waiters. Every grant gets a
  **fencing token** from one counter that is part of the replicated state (and
  of the snapshot), so tokens only ever grow, across crashes and leader changes.
* Before a command is applied, every session lapsed at the entry's time is
  reaped: its locks are released and its waits cancelled, all of them, and
  only then are freed locks handed to their next waiters. So no grant can go to
  a session whose lease has lapsed at the time of the grant (and the grant
  loop re-checks that anyway).
* The **wait-for graph** (see :mod:`protocols.locks.waitfor`) is kept acyclic:
  the only edge an acquire adds is from the new waiter, so a cycle can only
  form there, and it is found at once and broken by cancelling all waits of a
  victim (lowest priority, then the youngest session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from protocols.locks.commands import (
    FORMAT_VERSION,
    Acquire,
    CancelWait,
    CloseSession,
    Command,
    Expire,
    KeepAlive,
    OpenSession,
    Release,
    check_int,
    check_name,
    decode_stamped,
)
from protocols.locks.results import (
    CancelReason,
    DeadlockEvent,
    Granted,
    LockEvent,
    LockResult,
    LockStatus,
    Released,
    ReleaseReason,
    SessionExpired,
    WaitCancelled,
)
from protocols.locks.waitfor import WaitEdge, find_cycle_through
from schemas.errors import LockCodecError, LockError

__all__ = ["LockStateMachine"]

_MAX_TIME = 2**63 - 1
# (status, token, lease deadline) for the command's sender.
_Answer = tuple[LockStatus, int | None, int | None]


@dataclass(slots=True)
class _Session:
    ttl_ms: int
    deadline_ms: int
    seq: int  # open order: a higher seq is a younger session
    owner: str = ""  # the identity that opened it; only it may use the session
    held: set[str] = field(default_factory=set)
    waiting: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Waiter:
    session_id: str
    priority: int


@dataclass(slots=True)
class _Lock:
    holder: str | None
    token: int
    waiters: list[_Waiter] = field(default_factory=list)


class LockStateMachine:
    """The replicated lock table. Feed it committed commands in log order."""

    def __init__(self) -> None:
        self._now = 0
        self._next_token = 1
        self._next_seq = 1
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, _Lock] = {}

    # ---- applying commands -------------------------------------------------------------------

    def apply(self, command: Command, now_ms: int, requester: str = "") -> LockResult:
        """Apply one committed command at the leader-stamped time ``now_ms``.

        ``requester`` is who sent it as the broker saw it (the request's
        lane, never a payload field). A session belongs to the requester that
        opened it; any other requester's command for it is refused with
        ``NOT_OWNER`` and changes nothing, so a session id learnt elsewhere
        releases, renews or closes nothing.
        """
        check_int("now_ms", now_ms, 0, _MAX_TIME)
        now = self._now = max(self._now, now_ms)
        events: list[LockEvent] = []
        self._reap_lapsed(events)
        status, token, deadline = self._dispatch(command, requester, events)
        return LockResult(status, now, token, deadline, tuple(events))

    def apply_entry(self, entry: bytes) -> LockResult:
        """Apply an encoded log entry (see :func:`protocols.locks.commands.encode_entry`)."""
        now_ms, command, requester = decode_stamped(entry)
        return self.apply(command, now_ms, requester)

    def _dispatch(self, command: Command, requester: str, events: list[LockEvent]) -> _Answer:
        if isinstance(command, Expire):
            return LockStatus.OK, None, None
        if isinstance(command, OpenSession):
            if command.session_id in self._sessions:
                return LockStatus.SESSION_EXISTS, None, None
            deadline = self._now + command.ttl_ms
            self._sessions[command.session_id] = _Session(command.ttl_ms, deadline, self._next_seq,
                                                          owner=requester)
            self._next_seq += 1
            return LockStatus.OK, None, deadline
        session = self._sessions.get(command.session_id)
        if session is None:
            return LockStatus.NO_SESSION, None, None
        if session.owner != requester:
            return LockStatus.NOT_OWNER, None, None
        if isinstance(command, KeepAlive):
            session.deadline_ms = self._now + session.ttl_ms
            return LockStatus.OK, None, session.deadline_ms
        if isinstance(command, CloseSession):
            freed = self._end_session(command.session_id, closed=True, events=events)
            self._grant_all(freed, events)
            return LockStatus.OK, None, None
        if isinstance(command, Acquire):
            return self._acquire(command, session, events)
        if isinstance(command, Release):
            return self._release(command, session, events), None, None
        if isinstance(command, CancelWait):
            if command.lock_name not in session.waiting:
                return LockStatus.NOT_WAITING, None, None
            self._remove_waiter(command.session_id, command.lock_name)
            return LockStatus.OK, None, None
        raise LockError(f"not a lock command: {command!r}")

    def _acquire(self, cmd: Acquire, session: _Session, events: list[LockEvent]) -> _Answer:
        lock = self._locks.get(cmd.lock_name)
        if lock is None:
            lock = self._locks[cmd.lock_name] = _Lock(holder=None, token=0)
            self._grant(cmd.lock_name, lock, cmd.session_id, events)
            return LockStatus.GRANTED, lock.token, session.deadline_ms
        if lock.holder == cmd.session_id:
            return LockStatus.ALREADY_HELD, lock.token, session.deadline_ms
        if cmd.lock_name in session.waiting:
            return LockStatus.QUEUED, None, None
        if not cmd.wait:
            return LockStatus.BUSY, None, None
        lock.waiters.append(_Waiter(cmd.session_id, cmd.priority))
        session.waiting.add(cmd.lock_name)
        # The new edge starts at this session, so any new cycle runs through it.
        while cmd.lock_name in session.waiting:
            cycle = find_cycle_through(cmd.session_id, cmd.lock_name, self._out_edges)
            if cycle is None:
                return LockStatus.QUEUED, None, None
            self._break(cycle, cmd, events)
        return LockStatus.DEADLOCK, None, None

    def _break(self, cycle: list[WaitEdge], cmd: Acquire, events: list[LockEvent]) -> None:
        victim = min(cycle, key=lambda e: (e.priority, -self._sessions[e.waiter].seq)).waiter
        events.append(DeadlockEvent(
            cycle=tuple(e.waiter for e in cycle),
            locks=tuple(e.lock_name for e in cycle),
            victim=victim,
            now_ms=self._now,
        ))
        for name in sorted(self._sessions[victim].waiting):
            self._remove_waiter(victim, name)
            if (victim, name) != (cmd.session_id, cmd.lock_name):  # the acquirer hears it in its result
                events.append(WaitCancelled(victim, name, CancelReason.DEADLOCK))

    def _release(self, cmd: Release, session: _Session, events: list[LockEvent]) -> LockStatus:
        lock = self._locks.get(cmd.lock_name)
        if lock is None or lock.holder != cmd.session_id:
            return LockStatus.NOT_HOLDER
        if cmd.token != lock.token:
            return LockStatus.STALE_TOKEN
        lock.holder = None
        session.held.discard(cmd.lock_name)
        events.append(Released(cmd.session_id, cmd.lock_name, cmd.token, ReleaseReason.RELEASED))
        self._grant_all([cmd.lock_name], events)
        return LockStatus.RELEASED

    # ---- sessions, grants, waiters -----------------------------------------------------------

    def _reap_lapsed(self, events: list[LockEvent]) -> None:
        lapsed = sorted(
            (s.deadline_ms, s.seq, sid) for sid, s in self._sessions.items() if s.deadline_ms <= self._now
        )
        freed: list[str] = []
        for deadline, _seq, sid in lapsed:
            events.append(SessionExpired(sid, deadline))
            freed.extend(self._end_session(sid, closed=False, events=events))
        # Only now, with every lapsed session gone, hand freed locks on.
        self._grant_all(freed, events)

    def _end_session(self, sid: str, *, closed: bool, events: list[LockEvent]) -> list[str]:
        session = self._sessions.pop(sid)
        cancel = CancelReason.SESSION_CLOSED if closed else CancelReason.SESSION_EXPIRED
        release = ReleaseReason.SESSION_CLOSED if closed else ReleaseReason.SESSION_EXPIRED
        for name in sorted(session.waiting):
            self._remove_waiter(sid, name, session)
            events.append(WaitCancelled(sid, name, cancel))
        freed = sorted(session.held)
        for name in freed:
            lock = self._locks[name]
            lock.holder = None
            events.append(Released(sid, name, lock.token, release))
        return freed

    def _grant_all(self, names: list[str], events: list[LockEvent]) -> None:
        for name in sorted(names):
            lock = self._locks[name]
            while lock.holder is None and lock.waiters:
                waiter = lock.waiters.pop(0)
                session = self._sessions[waiter.session_id]
                session.waiting.discard(name)
                if session.deadline_ms <= self._now:  # unreachable after reaping; kept as the last guard
                    events.append(WaitCancelled(waiter.session_id, name, CancelReason.SESSION_EXPIRED))
                    continue
                self._grant(name, lock, waiter.session_id, events)
            if lock.holder is None:
                del self._locks[name]

    def _grant(self, name: str, lock: _Lock, sid: str, events: list[LockEvent]) -> None:
        session = self._sessions[sid]
        lock.holder, lock.token = sid, self._next_token
        self._next_token += 1
        session.held.add(name)
        events.append(Granted(sid, name, lock.token, session.deadline_ms))

    def _remove_waiter(self, sid: str, name: str, session: _Session | None = None) -> None:
        lock = self._locks[name]
        lock.waiters = [w for w in lock.waiters if w.session_id != sid]
        (session or self._sessions[sid]).waiting.discard(name)

    def _out_edges(self, sid: str) -> list[WaitEdge]:
        """Who ``sid`` waits for: per lock, the waiter just ahead of it, or the holder if it is first.

        Chaining waiters (rather than pointing each at the holder) is what FIFO
        means: a waiter cannot get the lock before everyone ahead of it has had
        it, so it waits for them too. It also means grants and cancellations
        never create a cycle; only a new wait can.
        """
        edges = []
        for name in sorted(self._sessions[sid].waiting):
            lock = self._locks[name]
            for i, waiter in enumerate(lock.waiters):
                if waiter.session_id == sid:
                    ahead = lock.waiters[i - 1].session_id if i else lock.holder
                    assert ahead is not None  # a lock with waiters always has a holder
                    edges.append(WaitEdge(sid, ahead, name, waiter.priority))
                    break
        return edges

    # ---- reading the state -------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The highest time applied so far."""
        return self._now

    @property
    def next_token(self) -> int:
        """The token the next grant will carry (every earlier one is smaller)."""
        return self._next_token

    def holder(self, lock_name: str) -> tuple[str, int] | None:
        """``(session_id, token)`` of the current holder, or None if the lock is free."""
        lock = self._locks.get(lock_name)
        return None if lock is None or lock.holder is None else (lock.holder, lock.token)

    def waiters(self, lock_name: str) -> tuple[str, ...]:
        """Sessions queued for ``lock_name``, first in line first."""
        lock = self._locks.get(lock_name)
        return () if lock is None else tuple(w.session_id for w in lock.waiters)

    def lease_deadline(self, session_id: str) -> int | None:
        """When ``session_id``'s lease lapses, or None if there is no such (live) session."""
        session = self._sessions.get(session_id)
        return None if session is None else session.deadline_ms

    def owner(self, session_id: str) -> str | None:
        """The identity that opened ``session_id`` (``""`` before lanes); None if there is no such session."""
        session = self._sessions.get(session_id)
        return None if session is None else session.owner

    def sessions(self) -> tuple[str, ...]:
        return tuple(sorted(self._sessions))

    def locks(self) -> tuple[str, ...]:
        """Locks that are held (free locks with no waiters are not kept)."""
        return tuple(sorted(self._locks))

    def wait_for_edges(self) -> list[WaitEdge]:
        """Every edge of the wait-for graph, in a deterministic order."""
        return [e for sid in sorted(self._sessions) for e in self._out_edges(sid)]

    # ---- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack: equal states give equal bytes.

        ``[1, now_ms, next_token, next_seq, sessions, locks]`` with
        ``sessions = [[id, ttl_ms, deadline_ms, seq, owner], ...]`` sorted by id
        (a snapshot from before lanes has no ``owner``: ``""``) and
        ``locks = [[name, holder, token, [[waiter, priority], ...]], ...]`` sorted
        by name, waiters in queue order.
        """
        sessions = [[sid, s.ttl_ms, s.deadline_ms, s.seq, s.owner]
                    for sid, s in sorted(self._sessions.items())]
        locks = [
            [name, lock.holder, lock.token, [[w.session_id, w.priority] for w in lock.waiters]]
            for name, lock in sorted(self._locks.items())
        ]
        body = [FORMAT_VERSION, self._now, self._next_token, self._next_seq, sessions, locks]
        return msgpack.packb(body, use_bin_type=True)

    @classmethod
    def from_snapshot(cls, data: bytes) -> LockStateMachine:
        machine = cls()
        machine.restore(data)
        return machine

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; a malformed one changes nothing."""
        try:
            state = _decode_snapshot(data)
        except (LockError, ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, LockCodecError):
                raise
            raise LockCodecError(f"invalid lock snapshot: {exc}") from exc
        self._now, self._next_token, self._next_seq, self._sessions, self._locks = state


def _decode_snapshot(data: bytes) -> tuple[int, int, int, dict[str, _Session], dict[str, _Lock]]:
    try:
        body: Any = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise LockCodecError(f"lock snapshot is not valid msgpack: {exc}") from exc
    if not isinstance(body, list) or len(body) != 6 or body[0] != FORMAT_VERSION:
        raise LockCodecError("lock snapshot must be [1, now_ms, next_token, next_seq, sessions, locks]")
    _, now, next_token, next_seq, raw_sessions, raw_locks = body
    check_int("now_ms", now, 0, _MAX_TIME)
    check_int("next_token", next_token, 1, _MAX_TIME)
    check_int("next_seq", next_seq, 1, _MAX_TIME)
    sessions: dict[str, _Session] = {}
    for row in raw_sessions:
        if not isinstance(row, list) or len(row) not in (4, 5):
            raise LockCodecError("a snapshot session must be [id, ttl_ms, deadline_ms, seq, owner]")
        sid, ttl, deadline, seq = row[:4]
        owner = row[4] if len(row) == 5 else ""
        if not isinstance(owner, str):
            raise LockCodecError(f"session {sid!r}: owner must be a string")
        check_name("session_id", sid)
        if sid in sessions:
            raise LockCodecError(f"session {sid!r} twice in snapshot")
        check_int("seq", seq, 1, next_seq - 1)
        check_int("ttl_ms", ttl, 1, _MAX_TIME)
        sessions[sid] = _Session(ttl, check_int("deadline", deadline, 0, _MAX_TIME), seq, owner=owner)
    locks: dict[str, _Lock] = {}
    for name, holder, token, raw_waiters in raw_locks:
        check_name("lock_name", name)
        if name in locks or holder not in sessions:
            raise LockCodecError(f"lock {name!r} repeated or held by an unknown session")
        check_int("token", token, 1, next_token - 1)
        lock = locks[name] = _Lock(holder, token)
        sessions[holder].held.add(name)
        for sid, priority in raw_waiters:
            check_int("priority", priority, -(2**31), 2**31 - 1)
            if sid not in sessions or sid == holder or name in sessions[sid].waiting:
                raise LockCodecError(f"bad waiter {sid!r} on lock {name!r}")
            lock.waiters.append(_Waiter(sid, priority))
            sessions[sid].waiting.add(name)
    return now, next_token, next_seq, sessions, locks
