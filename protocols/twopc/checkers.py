"""Safety and liveness checkers of two-phase commit, run over a recorded TwoPcHistory.

Each returns its violations (an empty list: the run was correct).
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.twopc.history import TwoPcHistory
from protocols.twopc.messages import Outcome

__all__ = ["SAFETY_CHECKS", "check_all"]


def atomicity(h: TwoPcHistory) -> list[str]:
    """Per transaction, every participant that carried out an outcome carried out the same one."""
    seen: dict[str, dict[Outcome, list[str]]] = {}
    for a in h.applied:
        seen.setdefault(a.tx_id, {}).setdefault(a.outcome, []).append(a.participant)
    return [f"{tx}: commit at {sorted(set(by[Outcome.COMMIT]))}, abort at {sorted(set(by[Outcome.ABORT]))}"
            for tx, by in sorted(seen.items()) if len(by) > 1]


def only_logged_commits(h: TwoPcHistory) -> list[str]:
    """A participant commits only what the log had decided to commit by then, and only prepared work.

    A participant that voted yes and rolls back must not belong to a committed
    transaction (the log's decision is final).
    """
    bad: list[str] = []
    yes = {(v.participant, v.tx_id) for v in h.votes if v.yes}
    for a in h.applied:
        logged = h.decided.get(a.tx_id)
        if a.outcome is Outcome.COMMIT:
            if logged is None or logged[0] is not Outcome.COMMIT or logged[1] > a.time:
                bad.append(f"{a.participant} committed {a.tx_id} at t={a.time}; the log says {logged}")
            if not a.was_prepared:
                bad.append(f"{a.participant} committed {a.tx_id} at t={a.time} without prepared work")
        elif (a.participant, a.tx_id) in yes and logged is not None and logged[0] is Outcome.COMMIT:
            bad.append(f"{a.participant} rolled back {a.tx_id} at t={a.time}, which the log committed")
    return bad


def decided_before_told(h: TwoPcHistory) -> list[str]:
    """Nobody hears a decision before its Decide entry is committed (applied by some replica)."""
    bad: list[str] = []
    for s in h.decisions_sent:
        logged = h.decided.get(s.tx_id)
        if logged is None or logged[0] is not s.outcome or logged[1] > s.time:
            bad.append(f"{s.node} told {s.to} {s.outcome} of {s.tx_id} at t={s.time}; the log says {logged}")
    for tx, (outcome, t) in sorted(h.client_told.items()):
        logged = h.decided.get(tx)
        if logged is None or logged[0] is not outcome or logged[1] > t:
            bad.append(f"client heard {outcome} of {tx} at t={t}; the log says {logged}")
    return bad[:20] + h.client_conflicts


def commit_needs_every_yes(h: TwoPcHistory) -> list[str]:
    """The log commits only after a yes vote from every participant; a no vote never sees commit."""
    bad: list[str] = []
    for tx, (outcome, t) in sorted(h.decided.items()):
        if outcome is not Outcome.COMMIT:
            continue
        for p in h.parts.get(tx, ()):
            votes = [v for v in h.votes if v.tx_id == tx and v.participant == p and v.time <= t]
            if not any(v.yes for v in votes):
                bad.append(f"{tx} committed at t={t} with no yes vote from {p}")
            if any(not v.yes for v in h.votes if v.tx_id == tx and v.participant == p):
                bad.append(f"{tx} committed although {p} voted no")
    no = {(v.participant, v.tx_id) for v in h.votes if not v.yes}
    bad += [f"{a.participant} voted no on {a.tx_id} and then committed it"
            for a in h.applied if a.outcome is Outcome.COMMIT and (a.participant, a.tx_id) in no]
    return bad


def prepared_durable(h: TwoPcHistory) -> list[str]:
    """A participant that crashed held a durable prepared record for every yes vote it had sent."""
    return list(h.durability)


def log_agrees(h: TwoPcHistory) -> list[str]:
    """Every replica applied the same decision for a transaction (the table is deterministic)."""
    return list(h.log_conflicts)


def liveness(h: TwoPcHistory) -> list[str]:
    """Once faults stop, every transaction ends: decided, applied by all its participants, forgotten."""
    f = h.final
    if f is None:
        return ["the run recorded no final state"]
    bad: list[str] = []
    if f.undecided_in_log:
        bad.append(f"undecided in the log after healing: {list(f.undecided_in_log)[:5]}")
    if f.open_in_log:
        bad.append(f"not ended (some participant never acknowledged): {list(f.open_in_log)[:5]}")
    if f.in_doubt:
        bad.append(f"participants still in doubt: {list(f.in_doubt)[:5]}")
    if f.resource_prepared:
        bad.append(f"resources still hold prepared work: {list(f.resource_prepared)[:5]}")
    if f.untold_clients:
        bad.append(f"clients never told the outcome of {list(f.untold_clients)[:5]}")
    return bad


SAFETY_CHECKS: dict[str, Callable[[TwoPcHistory], list[str]]] = {
    "atomicity": atomicity,
    "only_logged_commits": only_logged_commits,
    "decided_before_told": decided_before_told,
    "commit_needs_every_yes": commit_needs_every_yes,
    "prepared_durable": prepared_durable,
    "log_agrees": log_agrees,
}


def check_all(h: TwoPcHistory, check_liveness: bool = True) -> dict[str, list[str]]:
    """Every checker's violations, by name."""
    out = {name: fn(h) for name, fn in SAFETY_CHECKS.items()}
    if check_liveness:
        out["liveness"] = liveness(h)
    return out
