"""Safety and liveness checkers run over a recorded History; each returns its violations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import combinations

from protocols.raft.messages import EntryKind
from protocols.sim.history import History, LogView


def election_safety(h: History) -> list[str]:
    """(1) At most one leader per term."""
    leaders: dict[int, set[str]] = {}
    for e in h.elections:
        leaders.setdefault(e.term, set()).add(e.node)
    return [f"term {t} has leaders {sorted(ns)}" for t, ns in sorted(leaders.items()) if len(ns) > 1]


def _committed(h: History) -> dict[int, tuple[int, int, bytes]]:
    """index -> (term, first time any node applied it, command)."""
    out: dict[int, tuple[int, int, bytes]] = {}
    for a in h.applied:
        if a.entry.index not in out:
            out[a.entry.index] = (a.entry.term, a.time, a.entry.command)
    return out


def committed_durability(h: History) -> list[str]:
    """(2) Leader completeness: every leader of a later term holds every committed entry.

    An entry first applied at time t was committed by a leader whose term is at
    most the highest term elected by t; every leader of a higher term must hold it.
    (A leader of an older term may still win late, e.g. after a pause, and lack it.)
    """
    elections = sorted(h.elections, key=lambda e: e.time)
    bad: list[str] = []
    for index, (term, t, _cmd) in sorted(_committed(h).items()):
        bound = max((e.term for e in elections if e.time <= t), default=0)
        for el in elections:
            if el.term <= bound or index <= el.log.snapshot_index:
                continue  # older leader, or in its snapshot (state_machine_safety covers content)
            have = el.log.term_at(index)
            if have != term:
                bad.append(
                    f"leader {el.node} of term {el.term} at t={el.time} lacks entry {index} "
                    f"(term {term}) committed by t={t}; has term {have}"
                )
    return bad[:20]


def _pair_mismatch(a: LogView, b: LogView) -> str | None:
    lo = max(a.snapshot_index, b.snapshot_index) + 1
    hi = min(a.snapshot_index + len(a.entries), b.snapshot_index + len(b.entries))
    top = 0
    for i in range(hi, lo - 1, -1):
        if a.term_at(i) == b.term_at(i):
            top = i
            break
    for i in range(lo, top + 1):
        ea = a.entries[i - a.snapshot_index - 1]
        eb = b.entries[i - b.snapshot_index - 1]
        if ea != eb:
            return f"{a.node} and {b.node} agree at {top} but differ at {i}: {ea} vs {eb}"
    return None


def log_matching(h: History) -> list[str]:
    """(3) Two logs with the same term at an index are identical up to it."""
    bad: list[str] = []
    for t, views in h.checkpoints:
        for a, b in combinations(views, 2):
            msg = _pair_mismatch(a, b)
            if msg:
                bad.append(f"t={t}: {msg}")
    return bad


def state_machine_safety(h: History) -> list[str]:
    """(4) Every node applies the same entry at the same index, in index order (gaps only by snapshot)."""
    first: dict[int, tuple[int, EntryKind, bytes, str]] = {}
    last_by_run: dict[tuple[str, int], int] = {}
    bad: list[str] = []
    for a in h.applied:
        e = a.entry
        got = (e.term, e.kind, e.command, a.node)
        want = first.setdefault(e.index, got)
        if want[:3] != got[:3]:
            bad.append(f"index {e.index}: {want[3]} applied {want[:3]}, {a.node} applied {got[:3]}")
        run = (a.node, a.incarnation)
        prev = last_by_run.get(run)
        jumped = (a.node, a.incarnation, e.index - 1) in h.snapshot_installs
        if prev is not None and e.index != prev + 1 and not (jumped and e.index > prev):
            bad.append(f"{a.node} applied {e.index} after {prev}")
        last_by_run[run] = e.index
    return bad


def exactly_once(h: History) -> list[str]:
    """(5) Each acknowledged command is in the final state exactly once, at the slot it was told."""
    counts = Counter(h.final_register)
    bad = [f"command {c!r} applied {n} times" for c, n in counts.items() if n > 1]
    for ack in h.acks:
        n = counts.get(ack.command, 0)
        if n != 1:
            bad.append(f"acknowledged command {ack.command!r} is in the final state {n} times")
            continue
        slot = int(ack.result)
        if not (0 < slot <= len(h.final_register)) or h.final_register[slot - 1] != ack.command:
            bad.append(f"command {ack.command!r} was told slot {slot}, which holds something else")
    unknown = [c for c in counts if c not in h.submitted]
    bad += [f"state holds never-submitted command {c!r}" for c in unknown]
    return bad


def liveness(h: History, bound: int) -> list[str]:
    """(6) After every fault heals, a command commits within ``bound`` virtual ms."""
    if h.liveness_probe_acked_at is None:
        return ["no command committed after the faults healed"]
    took = h.liveness_probe_acked_at - h.liveness_probe_sent_at
    return [f"probe command took {took} ms after healing (bound {bound})"] if took > bound else []


SAFETY_CHECKS: dict[str, Callable[[History], list[str]]] = {
    "election_safety": election_safety,
    "committed_durability": committed_durability,
    "log_matching": log_matching,
    "state_machine_safety": state_machine_safety,
    "exactly_once": exactly_once,
}


def check_all(h: History, liveness_bound: int | None) -> dict[str, list[str]]:
    """Every checker's violations, by name (empty lists mean the run was correct)."""
    out = {name: fn(h) for name, fn in SAFETY_CHECKS.items()}
    if liveness_bound is not None:
        out["liveness"] = liveness(h, liveness_bound)
    return out
