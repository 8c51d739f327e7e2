"""Property tests of the lock state machine over generated command schedules with time advancing.

An independent model, fed only by the commands and the state machine's results
and events, checks after every command: at most one holder per lock; fencing
tokens strictly increase per grant (also across snapshot/restore); no grant to a
session whose lease has lapsed; FIFO grants; lapsed sessions reaped; the
wait-for graph acyclic (every deadlock that forms is broken at once); and that
a machine restored from a snapshot gives the same results as the original from
then on. Broken variants of the machine show that each check can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from protocols.locks import (
    Acquire,
    CancelWait,
    CloseSession,
    Command,
    DeadlockEvent,
    Expire,
    Granted,
    KeepAlive,
    LockEvent,
    LockResult,
    LockStateMachine,
    LockStatus,
    OpenSession,
    Release,
    Released,
    SessionExpired,
    WaitCancelled,
    encode_entry,
)
from protocols.locks import state_machine as sm_module

SESSIONS = ("a", "b", "c", "d")
LOCKS = ("x", "y", "z")

sess = st.sampled_from(SESSIONS)
lock = st.sampled_from(LOCKS)
OP_ARGS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    "acquire": st.tuples(st.just("acquire"), sess, lock, st.integers(0, 2),
                         st.sampled_from([True, True, True, False])),
    # The holder of a lock lets go (with its real token): what makes queues move.
    "release_holder": st.tuples(st.just("release_holder"), lock),
    "release": st.tuples(st.just("release"), sess, lock, st.sampled_from(["current", "stale", "newer"])),
    "keepalive": st.tuples(st.just("keepalive"), sess),
    "cancel": st.tuples(st.just("cancel"), sess, lock),
    "open": st.tuples(st.just("open"), sess, st.integers(30, 3000)),
    "close": st.tuples(st.just("close"), sess),
    "tick": st.tuples(st.just("tick")),
    "snap": st.tuples(st.just("snap")),
}
# Weights by repetition; sampled_from is (nearly) uniform, unlike one_of over many branches.
KINDS = ["acquire"] * 8 + ["release_holder"] * 2 + ["keepalive"] * 3 + [
    "release", "cancel", "open", "open", "open", "close", "tick", "snap"]
op = st.sampled_from(KINDS).flatmap(OP_ARGS.__getitem__)
# Time mostly moves forward; sometimes a (new) leader stamps an earlier time.
step = st.tuples(op, st.sampled_from([0, 1, 5, 10, 10, 20, 20, 50, -40, 400, 1000]))


def schedules_of(max_size: int) -> st.SearchStrategy[list[tuple[tuple[object, ...], int]]]:
    """Every session opened at the start (so most commands do something), then random steps."""
    opens = st.tuples(*(st.tuples(st.tuples(st.just("open"), st.just(s), st.integers(500, 5000)), st.just(0))
                        for s in SESSIONS))
    return st.tuples(opens, st.lists(step, min_size=10, max_size=max_size)).map(lambda t: [*t[0], *t[1]])


schedules = schedules_of(80)

Op = tuple[object, ...]
Schedule = list[tuple[Op, int]]


class Violation(AssertionError):
    pass


@dataclass
class Model:
    """What the checker believes, built only from commands, results and events."""

    now: int = 0
    deadlines: dict[str, int] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)
    holders: dict[str, tuple[str, int]] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=dict)
    last_token: int = 0
    held_tokens: dict[tuple[str, str], int] = field(default_factory=dict)

    def live(self, sid: str) -> bool:
        return sid in self.deadlines and self.deadlines[sid] > self.now


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Violation(what)


def wait_for_cycle(holders: dict[str, tuple[str, int]], queues: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the full wait-for graph: each waiter waits for the holder and everyone ahead of it."""
    edges: dict[str, set[str]] = {}
    for name, queue in queues.items():
        for i, waiter in enumerate(queue):
            targets = edges.setdefault(waiter, set())
            if name in holders:
                targets.add(holders[name][0])
            targets.update(queue[:i])
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return path[path.index(nxt):]
            if nxt not in colour and (found := visit(nxt)) is not None:
                return found
        colour[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in colour and (found := visit(start)) is not None:
            return found
    return None


def to_command(op: Op, model: Model) -> Command:
    kind = op[0]
    if kind == "open":
        return OpenSession(str(op[1]), int(str(op[2])))
    if kind == "keepalive":
        return KeepAlive(str(op[1]))
    if kind == "close":
        return CloseSession(str(op[1]))
    if kind == "acquire":
        return Acquire(str(op[1]), str(op[2]), priority=int(str(op[3])), wait=bool(op[4]))
    if kind == "release":
        sid, name, choice = str(op[1]), str(op[2]), op[3]
        token = model.held_tokens.get((sid, name), 1)
        token = {"current": token, "stale": max(1, token - 1), "newer": token + 1}[str(choice)]
        return Release(sid, name, token)
    if kind == "release_holder":
        name = str(op[1])
        sid, token = model.holders.get(name, ("a", 1))
        return Release(sid, name, token)
    if kind == "cancel":
        return CancelWait(str(op[1]), str(op[2]))
    return Expire()


def observe(model: Model, command: Command, stamped: int, result: LockResult) -> None:
    """Advance the model by one applied command and check every invariant."""
    model.now = max(model.now, stamped)
    now = model.now
    check(result.now_ms == now, f"time went wrong: {result.now_ms} != {now}")
    for event in result.events:
        if isinstance(event, SessionExpired):
            sid = event.session_id
            check(sid in model.deadlines and model.deadlines[sid] <= now, f"{sid} expired early at {now}")
            check(event.lease_deadline_ms == model.deadlines[sid], f"{sid} expired with the wrong deadline")
            del model.deadlines[sid]
        elif isinstance(event, Released):
            check(model.holders.get(event.lock_name) == (event.session_id, event.token),
                  f"release of {event.lock_name} by non-holder {event.session_id}")
            del model.holders[event.lock_name]
        elif isinstance(event, WaitCancelled):
            queue = model.queues.get(event.lock_name, [])
            check(event.session_id in queue, f"cancelled a wait that did not exist: {event}")
            queue.remove(event.session_id)
        elif isinstance(event, Granted):
            name, sid = event.lock_name, event.session_id
            check(name not in model.holders, f"two holders of {name}: {model.holders.get(name)} and {sid}")
            check(event.token > model.last_token, f"token {event.token} after {model.last_token}")
            check(model.live(sid), f"grant of {name} to {sid} whose lease lapsed (now {now})")
            check(event.lease_deadline_ms == model.deadlines.get(sid), f"grant with wrong deadline {event}")
            queue = model.queues.get(name, [])
            if queue:
                check(queue[0] == sid, f"FIFO broken on {name}: granted to {sid}, queue {queue}")
                queue.pop(0)
            else:
                asked = isinstance(command, Acquire) and command.session_id == sid
                asked = asked and isinstance(command, Acquire) and command.lock_name == name
                check(asked, f"grant of {name} to {sid} out of nowhere")
            model.last_token = event.token
            model.holders[name] = (sid, event.token)
            model.held_tokens[(sid, name)] = event.token
        elif isinstance(event, DeadlockEvent):
            check(event.victim in event.cycle, "victim outside the cycle")
    check(all(d > now for d in model.deadlines.values()), f"a lapsed session survived at {now}")

    status = result.status
    if isinstance(command, OpenSession):
        expected = LockStatus.SESSION_EXISTS if command.session_id in model.deadlines else LockStatus.OK
        check(status == expected, f"open answered {status}")
        if status == LockStatus.OK:
            model.deadlines[command.session_id] = now + command.ttl_ms
            model.ttls[command.session_id] = command.ttl_ms
        return
    if isinstance(command, Expire):
        return
    sid = command.session_id
    if not model.live(sid):
        check(status == LockStatus.NO_SESSION, f"{command} from a dead session answered {status}")
        return
    check(status != LockStatus.NO_SESSION, f"live session {sid} told no_session")
    if isinstance(command, KeepAlive):
        model.deadlines[sid] = now + model.ttls[sid]
        check(result.lease_deadline_ms == model.deadlines[sid], "keepalive gave the wrong deadline")
    elif isinstance(command, CloseSession):
        del model.deadlines[sid]
    elif isinstance(command, Acquire):
        name = command.lock_name
        if status in (LockStatus.GRANTED, LockStatus.ALREADY_HELD):
            check(model.holders.get(name) == (sid, result.token), f"{status} but model holder differs")
            check(result.lease_deadline_ms == model.deadlines[sid], "grant result with wrong deadline")
        elif status == LockStatus.QUEUED:
            queue = model.queues.setdefault(name, [])
            if sid not in queue:
                queue.append(sid)
        elif status == LockStatus.BUSY:
            check(not command.wait and name in model.holders, "busy while free or while allowed to wait")
        else:
            check(status == LockStatus.DEADLOCK and result.deadlocks != (), f"acquire answered {status}")
    elif isinstance(command, Release):
        own = [e for e in result.events if isinstance(e, Released) and e.reason == "released"]
        if status == LockStatus.RELEASED:
            check([(e.session_id, e.lock_name, e.token) for e in own]
                  == [(sid, command.lock_name, command.token)], "release without its event")
        else:
            check(not own, f"{status} but a lock was released")
            held = model.holders.get(command.lock_name)
            if held is None or held[0] != sid:
                check(status == LockStatus.NOT_HOLDER, f"release by non-holder answered {status}")
            else:
                check(held[1] != command.token and status == LockStatus.STALE_TOKEN,
                      f"release with token {command.token} of {held} answered {status}")
    elif isinstance(command, CancelWait):
        queue = model.queues.get(command.lock_name, [])
        expected = LockStatus.OK if sid in queue else LockStatus.NOT_WAITING
        check(status == expected, f"cancel answered {status}")
        if sid in queue:
            queue.remove(sid)


def check_structure(model: Model, machine: LockStateMachine) -> None:
    for name in LOCKS:
        queue = model.queues.get(name, [])
        check(not queue or name in model.holders, f"{name} free while {queue} wait")
        check(machine.holder(name) == model.holders.get(name), f"holder of {name} disagrees with events")
        check(list(machine.waiters(name)) == queue, f"queue of {name} disagrees with events")
        users = set(queue) | {model.holders[name][0]} if name in model.holders else set(queue)
        check(users <= set(model.deadlines), f"a dead session still holds or waits for {name}")
    cycle = wait_for_cycle(model.holders, model.queues)
    check(cycle is None, f"wait-for cycle left standing: {cycle}")


def run_schedule(factory: Callable[[], LockStateMachine], schedule: Schedule) -> None:
    """Apply a schedule, checking everything; raises :class:`Violation` on the first broken invariant."""
    machine = factory()
    shadow: LockStateMachine | None = None
    model = Model()
    stamped = 0
    for op, dt in schedule:
        stamped = max(0, stamped + dt)
        if op[0] == "snap":
            data = machine.snapshot()
            shadow = type(machine).from_snapshot(data)
            check(shadow.snapshot() == data, "snapshot does not round-trip")
            check(shadow.next_token == model.last_token + 1, "the token counter did not survive the snapshot")
            continue
        command = to_command(op, model)
        result = machine.apply(command, stamped)
        if shadow is not None:
            # The restored replica sees the same log entries (through the wire encoding).
            check(shadow.apply_entry(encode_entry(stamped, command)) == result, "restored replica diverged")
        observe(model, command, stamped, result)
        check_structure(model, machine)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules)
def test_random_schedules_keep_every_invariant(schedule: Schedule) -> None:
    run_schedule(LockStateMachine, schedule)


@pytest.mark.slow
@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules_of(200))
def test_random_schedules_keep_every_invariant_long(schedule: Schedule) -> None:
    run_schedule(LockStateMachine, schedule)


# ---- the checks can fail: each broken variant is caught -------------------------------------------


class NoReaping(LockStateMachine):
    """Forgets to expire lapsed sessions before granting."""

    def _reap_lapsed(self, events: list[LockEvent]) -> None:
        pass


class LifoWaiters(LockStateMachine):
    """Hands a freed lock to the newest waiter."""

    def _grant_all(self, names: list[str], events: list[LockEvent]) -> None:
        for name in names:
            self._locks[name].waiters.reverse()
        super()._grant_all(names, events)
        for name in names:
            if name in self._locks:
                self._locks[name].waiters.reverse()


class PerLockTokens(LockStateMachine):
    """Counts tokens per lock and forgets the count when the lock is freed (tokens get reused)."""

    def _grant(self, name: str, lock: sm_module._Lock, sid: str, events: list[LockEvent]) -> None:
        self._next_token = lock.token + 1
        super()._grant(name, lock, sid, events)


class TokenLostInSnapshot(LockStateMachine):
    """Does not persist the token counter in its snapshot."""

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self._next_token = 1 + max((lk.token for lk in self._locks.values()), default=0)


def search_fails(factory: Callable[[], LockStateMachine], max_examples: int = 3000) -> None:
    """Random schedules (no shrinking, fixed seed) until one breaks an invariant of ``factory``."""

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(schedules)
    def run(schedule: Schedule) -> None:
        run_schedule(factory, schedule)

    run()


@pytest.mark.parametrize("broken", [NoReaping, LifoWaiters, PerLockTokens, TokenLostInSnapshot])
def test_checker_catches_a_broken_variant(broken: type[LockStateMachine]) -> None:
    with pytest.raises(Violation):
        search_fails(broken)


def test_checker_catches_a_missing_deadlock_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sm_module, "find_cycle_through", lambda *args: None)
    with pytest.raises(Violation, match="cycle"):
        search_fails(LockStateMachine)
