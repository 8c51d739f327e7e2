"""PBFT invariants over a recorded simulation history; each checker returns its violations."""

from __future__ import annotations

from collections.abc import Callable

from protocols.pbft.sim.cluster import PbftHistory


def agreement(h: PbftHistory) -> list[str]:
    """No two honest replicas execute different batches at one sequence number."""
    first: dict[int, tuple[str, bytes]] = {}
    bad = []
    for e in h.executions:
        have = first.setdefault(e.seq, (e.replica, e.digest))
        if have[1] != e.digest:
            bad.append(
                f"seq {e.seq}: {have[0]} executed {have[1].hex()[:8]}, {e.replica} {e.digest.hex()[:8]}"
            )
    return bad[:10]


def executed_once(h: PbftHistory) -> list[str]:
    """An honest replica executes each client request at one sequence number only, with one outcome.

    A replica restarted from its stable checkpoint runs the same sequence numbers
    again (its state after the checkpoint was lost); that is not a second execution.
    """
    seen: dict[tuple[str, str, int], int] = {}
    outcome: dict[tuple[str, int], bytes] = {}
    bad = []
    for e in h.executions:
        for client, ts, result in e.results:
            key = (e.replica, client, ts)
            if seen.get(key, e.seq) != e.seq:
                bad.append(f"{e.replica} executed {client}/{ts} at seq {seen[key]} and again at {e.seq}")
            seen[key] = e.seq
            if outcome.setdefault((client, ts), result) != result:
                bad.append(f"{client}/{ts} has two results among honest replicas")
    return bad[:10]


def client_validity(h: PbftHistory) -> list[str]:
    """A client accepts only a result honest replicas produced for exactly that request."""
    produced: dict[tuple[str, int], set[bytes]] = {}
    for e in h.executions:
        for client, ts, result in e.results:
            produced.setdefault((client, ts), set()).add(result)
    bad = []
    for a in h.acceptances:
        if a.result not in produced.get((a.client, a.timestamp), set()):
            bad.append(f"{a.client}/{a.timestamp} accepted {a.result[:40]!r}; no honest replica produced it")
    return bad[:10]


def liveness(h: PbftHistory) -> list[str]:
    """After the network heals and crashed replicas restart, a new request is accepted."""
    if h.probe_accepted is None:
        return [f"the probe request sent after t={h.settle_start} was never accepted"]
    return []


def evidence(h: PbftHistory) -> list[str]:
    """A replica caught contradicting itself is quarantined by every honest replica; no honest one is."""
    bad = []
    for liar in h.exposed:
        missing = [r for r in h.honest if liar not in h.final_quarantined.get(r, ())]
        if missing:
            bad.append(f"{liar} equivocated (seen at t={h.exposed[liar]}); {missing} did not quarantine it")
    for t, by, who in h.quarantines:
        if who in h.honest:
            bad.append(f"t={t}: {by} quarantined honest replica {who}")
    return bad[:10]


CHECKERS: dict[str, Callable[[PbftHistory], list[str]]] = {
    "agreement": agreement,
    "executed_once": executed_once,
    "client_validity": client_validity,
    "liveness": liveness,
    "evidence": evidence,
}


def check_all(h: PbftHistory, with_liveness: bool = True) -> dict[str, list[str]]:
    return {name: fn(h) for name, fn in CHECKERS.items() if with_liveness or name != "liveness"}
