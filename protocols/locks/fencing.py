"""Fencing: the protected resource, not the lock service, is the last line of defence.

A lease cannot stop a paused process. A holder that is SIGSTOPped (or stuck in
GC, or cut off) past its lease wakes up still believing it holds the lock, while
the lock service has long since granted it to someone else under a higher
token. The only place that can tell the two writes apart is the resource they
both write to. So every write carries the writer's fencing token, and the
resource keeps, per lock, the highest token it has accepted and refuses any
lower one (Kleppmann's pattern; etcd's revision, ZooKeeper's zxid)::

    token = await lock("camera-7/ptz")          # Granted(token=42)
    store.write(key, value, fence=("camera-7/ptz", token))
    # inside the store, atomically with the write:
    resource.admit("camera-7/ptz", token)      # False -> refuse the write

Equal tokens are admitted: one holder writes many times under one grant.
:class:`FencedResource` keeps its high-water marks in memory; a resource that
survives restarts must persist them with its data (``high_water_marks`` and
the constructor make that a one-liner), in the same transaction as the write.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.locks.commands import check_int, check_name
from schemas.errors import StaleTokenError

__all__ = ["FencedResource"]


class FencedResource:
    """Per-lock highest accepted fencing token; admits a token only if it is not stale."""

    def __init__(self, high_water_marks: Mapping[str, int] | None = None) -> None:
        self._highest: dict[str, int] = {}
        for name, token in (high_water_marks or {}).items():
            self._highest[check_name("lock_name", name)] = check_int("token", token, 1, 2**63 - 1)

    def admit(self, lock_name: str, token: int) -> bool:
        """Record ``token`` and return True if it is at least the highest seen; else False, unchanged."""
        check_name("lock_name", lock_name)
        check_int("token", token, 1, 2**63 - 1)
        if token < self._highest.get(lock_name, 0):
            return False
        self._highest[lock_name] = token
        return True

    def check(self, lock_name: str, token: int) -> None:
        """Like :meth:`admit` but raises :class:`StaleTokenError` for a stale token."""
        if not self.admit(lock_name, token):
            raise StaleTokenError(
                f"stale fencing token {token} for {lock_name!r}: {self._highest[lock_name]} already accepted"
            )

    def highest(self, lock_name: str) -> int | None:
        return self._highest.get(lock_name)

    def high_water_marks(self) -> dict[str, int]:
        """What a durable resource persists alongside its data."""
        return dict(sorted(self._highest.items()))
