"""The fleet decision log: decisions one lying device must not make alone, decided by a quorum of proposers.

PBFT orders the operations and guarantees every honest replica applies the
same ones; this state machine adds what ordering alone does not: a decision
takes effect only when ``quorum`` distinct proposers (the signed client
identities of the requests, not anything the operation claims) asked for the
same outcome. So one compromised device can propose, but never decide.

Operations (JSON objects):

* ``{"op": "quarantine", "device": D}`` / ``{"op": "release", "device": D}``
* ``{"op": "accept_model", "group": G, "version": V}``
* ``{"op": "read", "since": N}``: the decisions after index N (at most READ_MAX)

A proposal is answered ``pending`` (with the votes so far), ``decided`` (this
vote completed the quorum; the decision's index), ``in_effect`` (the state
already is that) or ``error``. One proposer holds at most one vote per subject
(a later vote replaces its earlier one), so the state a liar can grow is
bounded by proposers x subjects. Deterministic: no clocks, no randomness.

>>> log = FleetDecisionLog(quorum=2)
>>> log.apply(b'{"op": "quarantine", "device": "cam-7"}', "gw-a")
b'{"needed":2,"status":"pending","votes":1}'
>>> log.apply(b'{"op": "quarantine", "device": "cam-7"}', "gw-b")
b'{"index":1,"status":"decided"}'
>>> sorted(log.quarantined)
['cam-7']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["READ_MAX", "Decision", "FleetDecisionLog"]

READ_MAX = 100
_MAX_TEXT = 128


@dataclass(frozen=True, slots=True)
class Decision:
    """One decided entry: ``kind`` (quarantine, release, accept_model), its subject and value."""

    index: int
    kind: str
    subject: str
    value: str
    proposers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "subject": self.subject, "value": self.value,
                "proposers": list(self.proposers)}

    @classmethod
    def from_json(cls, doc: Any) -> Decision:
        """Lenient reader for a decision that came back in a read result; ValueError when it is not one."""
        try:
            d = cls(int(doc["index"]), str(doc["kind"]), str(doc["subject"]), str(doc["value"]),
                    tuple(str(p) for p in doc["proposers"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a decision record: {exc}") from exc
        if d.kind not in ("quarantine", "release", "accept_model"):
            raise ValueError(f"unknown decision kind {d.kind!r}")
        return d


class _BadOp(ValueError):
    pass


def _text(doc: dict[str, Any], key: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v or len(v) > _MAX_TEXT:
        raise _BadOp(f"{key!r} must be a non-empty string of at most {_MAX_TEXT} characters")
    return v


class FleetDecisionLog:
    """A :class:`~protocols.pbft.state_machine.ReplicatedStateMachine` for fleet decisions."""

    def __init__(self, quorum: int = 2) -> None:
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        self.decisions: list[Decision] = []
        self.quarantined: set[str] = set()
        self.models: dict[str, str] = {}
        #: subject ("device/D" or "model/G") -> proposer -> the outcome it asks for
        self.votes: dict[str, dict[str, str]] = {}

    def apply(self, operation: bytes, client: str) -> bytes:
        try:
            doc = json.loads(operation)
            if not isinstance(doc, dict):
                raise _BadOp("an operation is a JSON object")
            op = doc.get("op")
            if op == "read":
                since = doc.get("since", 0)
                if not isinstance(since, int) or isinstance(since, bool) or since < 0:
                    raise _BadOp("'since' must be a non-negative integer")
                return self._read(since)
            if op in ("quarantine", "release"):
                device = _text(doc, "device")
                return self._propose(client, f"device/{device}", op, device, op)
            if op == "accept_model":
                group, version = _text(doc, "group"), _text(doc, "version")
                return self._propose(client, f"model/{group}", op, group, version)
            raise _BadOp(f"unknown op {op!r}")
        except (ValueError, TypeError) as exc:  # _BadOp and malformed JSON alike
            return _dump({"status": "error", "error": str(exc)[:200]})

    def _current(self, kind: str, subject: str) -> str:
        if kind in ("quarantine", "release"):
            return "quarantine" if subject in self.quarantined else "release"
        return self.models.get(subject, "")

    def _propose(self, client: str, slot: str, kind: str, subject: str, value: str) -> bytes:
        votes = self.votes.setdefault(slot, {})
        if self._current(kind, subject) == value:
            votes.pop(client, None)
            if not votes:
                del self.votes[slot]
            return _dump({"status": "in_effect"})
        votes[client] = value
        agree = sorted(p for p, v in votes.items() if v == value)
        if len(agree) < self.quorum:
            return _dump({"status": "pending", "votes": len(agree), "needed": self.quorum})
        del self.votes[slot]
        d = Decision(len(self.decisions) + 1, kind, subject, value, tuple(agree))
        self.decisions.append(d)
        if kind == "quarantine":
            self.quarantined.add(subject)
        elif kind == "release":
            self.quarantined.discard(subject)
        else:
            self.models[subject] = value
        return _dump({"status": "decided", "index": d.index})

    def _read(self, since: int) -> bytes:
        page = self.decisions[since:since + READ_MAX]
        return _dump({"status": "ok", "decisions": [d.to_json() for d in page],
                      "total": len(self.decisions)})

    def snapshot(self) -> bytes:
        return _dump({"quorum": self.quorum, "decisions": [d.to_json() for d in self.decisions],
                      "votes": self.votes})

    def restore(self, data: bytes) -> None:
        doc = json.loads(data)
        fresh = FleetDecisionLog(int(doc["quorum"]))
        for d in doc["decisions"]:
            dec = Decision.from_json(d)
            fresh.decisions.append(dec)
            if dec.kind == "quarantine":
                fresh.quarantined.add(dec.subject)
            elif dec.kind == "release":
                fresh.quarantined.discard(dec.subject)
            else:
                fresh.models[dec.subject] = dec.value
        fresh.votes = {str(s): {str(p): str(v) for p, v in vs.items()} for s, vs in doc["votes"].items()}
        self.quorum, self.decisions, self.quarantined = fresh.quorum, fresh.decisions, fresh.quarantined
        self.models, self.votes = fresh.models, fresh.votes


def _dump(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
