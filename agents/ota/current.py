"""The update this agent is busy with, shared by the command worker and the OTA worker."""

from __future__ import annotations

import threading

from schemas.errors import UpdateRefused
from schemas.ota import Phase

__all__ = ["CurrentUpdate"]


class CurrentUpdate:
    """Which update is being downloaded, installed or on trial, and why offers are refused now.

    Read by the command worker (an offer must not disturb it), written by the
    OTA worker; every access holds the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._update_id: str | None = None
        self._phase = Phase.DOWNLOADING
        self._busy: str | None = None

    def admit(self, update_id: str) -> Phase | None:
        """The phase of ``update_id`` when it is the current one; UpdateRefused("busy") when offers wait."""
        with self._lock:
            if self._update_id == update_id:
                return self._phase
            if self._busy is not None:
                raise UpdateRefused("busy", f"update {update_id} refused: {self._busy}")
            return None

    def claim(self, update_id: str, phase: Phase = Phase.DOWNLOADING, busy: str | None = None) -> None:
        with self._lock:
            self._update_id = update_id
            self._phase = phase
            if busy is not None:
                self._busy = busy

    def installing(self, update_id: str) -> None:
        with self._lock:
            self._busy = f"installing update {update_id}"
            self._phase = Phase.INSTALLING

    def forget(self, update_id: str | None = None) -> None:
        """No current update any more (only when it is ``update_id``, if given)."""
        with self._lock:
            if update_id is None or self._update_id == update_id:
                self._update_id = None

    def settle(self, busy: str | None) -> None:
        """No current update; offers refused for ``busy`` (None: welcome again)."""
        with self._lock:
            self._update_id = None
            self._busy = busy

    def refuse(self, busy: str) -> None:
        with self._lock:
            self._busy = busy
