"""The replicated state machine PBFT orders operations for, and the fleet decision log built on it."""

from __future__ import annotations

import json
from typing import Protocol


class ReplicatedStateMachine(Protocol):
    """Deterministic: every honest replica that applies the same operations in the same order agrees."""

    def apply(self, operation: bytes, client: str) -> bytes:
        """``client``: the signed client identity of the request (who proposed it), not a claim in it."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class DecisionLog:
    """Fleet decisions that one lying device must not make: the first value decided for a key stays.

    An operation is JSON ``{"key": ..., "value": ...}``; the result names the
    value decided for the key (the earlier one if the key was already decided)
    and the position of this operation in the log. Operations that are not
    valid JSON objects are answered with an error result, deterministically.

    >>> log = DecisionLog()
    >>> log.apply(b'{"key": "quarantine/cam-7", "value": "yes"}', "c1")
    b'{"decided":"yes","index":1,"key":"quarantine/cam-7"}'
    >>> log.apply(b'{"key": "quarantine/cam-7", "value": "no"}', "c2")
    b'{"decided":"yes","index":2,"key":"quarantine/cam-7"}'
    """

    def __init__(self) -> None:
        self.decisions: dict[str, str] = {}
        self.applied = 0

    def apply(self, operation: bytes, client: str = "") -> bytes:
        self.applied += 1
        try:
            doc = json.loads(operation)
            key, value = doc["key"], doc["value"]
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("key and value must be strings")
        except (ValueError, TypeError, KeyError) as exc:
            return _dump({"error": f"bad operation: {type(exc).__name__}", "index": self.applied})
        decided = self.decisions.setdefault(key, value)
        return _dump({"decided": decided, "index": self.applied, "key": key})

    def snapshot(self) -> bytes:
        return _dump({"applied": self.applied, "decisions": self.decisions})

    def restore(self, data: bytes) -> None:
        doc = json.loads(data)
        self.applied = int(doc["applied"])
        self.decisions = {str(k): str(v) for k, v in doc["decisions"].items()}


def _dump(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
