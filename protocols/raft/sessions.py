"""Client sessions: apply each (client id, request seq) once, answer retries from a cache.

This table is replicated state: every node updates it while applying, and it
travels inside snapshots, so a new leader answers a retry of a command its
predecessor applied without running it twice.
"""

from __future__ import annotations

from collections.abc import Iterable


class Sessions:
    """Last applied request seq and its result, per client (a client has one command in flight)."""

    def __init__(self, items: Iterable[tuple[str, int, bytes]] = ()) -> None:
        self._last: dict[str, tuple[int, bytes]] = {cid: (seq, res) for cid, seq, res in items}

    def seen(self, client_id: str, request_seq: int) -> tuple[bool, bytes | None]:
        """(already applied?, cached result if it was the latest request)."""
        if not client_id:
            return False, None
        last = self._last.get(client_id)
        if last is None or request_seq > last[0]:
            return False, None
        return True, last[1] if request_seq == last[0] else None

    def record(self, client_id: str, request_seq: int, result: bytes) -> None:
        if client_id:
            self._last[client_id] = (request_seq, result)

    def items(self) -> tuple[tuple[str, int, bytes], ...]:
        return tuple(sorted((cid, seq, res) for cid, (seq, res) in self._last.items()))
