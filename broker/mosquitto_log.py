"""Mosquitto's refusals as audit records, read from its log file.

Mosquitto 2.x has no hook for refused logins or ACL denials short of a C
plugin, but it logs both; :class:`MosquittoLogAudit` follows the log file and
turns each such line into an audit record (:mod:`broker.audit`):

* ``Client <unknown> disconnected, not authorised.`` (log type ``notice``,
  on by default) - a refused CONNECT: ``auth_failure``, reason
  ``not_authorised``. Mosquitto 2.0 names neither the client id nor the user
  in this line, so the subject is the address of the connection it refused
  (from the ``New connection from ADDR`` line before it), or empty.
* ``Denied PUBLISH from CLIENT (..., 'TOPIC', ...)`` - logged only with
  ``log_type debug`` (or ``all``), which also logs every message: costly on a
  busy broker, so it is the operator's choice. ``acl_denied``, subject the
  client id (edgebus clients use the device id), reason ``publish``.

Mosquitto 2.0 grants a subscription its ACL forbids and filters each delivery
instead, without a log line, so denied reads are not seen here.

>>> parse_line("Denied PUBLISH from cam-1 (d0, q1, r0, m1, 'edgebus/cam-2/metrics', ... (1 bytes))")
('acl_denied', 'cam-1', 'publish', 'topic edgebus/cam-2/metrics')
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from broker.audit import AuditLog
from schemas.audit import AuditKind

__all__ = ["MosquittoLogAudit", "parse_line"]

logger = logging.getLogger(__name__)

_DENIED = re.compile(r"Denied PUBLISH from (\S+) \([^']*'([^']*)'")
_NOT_AUTHORISED = re.compile(r"Client (\S+) disconnected, not authori[sz]ed")
_NEW_CONNECTION = re.compile(r"New connection from (\S+) on port")
#: Longest line considered (a longer one is skipped up to its end).
_MAX_LINE = 8192


def parse_line(line: str) -> tuple[str, str, str, str] | None:
    """``(kind, subject, reason, detail)`` for a refusal line, else None."""
    match = _DENIED.search(line)
    if match:
        return str(AuditKind.ACL_DENIED), match.group(1), "publish", f"topic {match.group(2)}"
    match = _NOT_AUTHORISED.search(line)
    if match:
        client = match.group(1)
        return (str(AuditKind.AUTH_FAILURE), "" if client == "<unknown>" else client, "not_authorised",
                "mosquitto refused the CONNECT")
    return None


class MosquittoLogAudit:
    """Follow Mosquitto's log file from its current end; every :meth:`poll` audits the new refusals."""

    def __init__(self, path: Path, audit: AuditLog, *, from_start: bool = False) -> None:
        self.path = Path(path)
        self.audit = audit
        self._offset = 0 if from_start or not self.path.exists() else self.path.stat().st_size
        self._partial = b""
        self._last_address = ""
        self.lines = 0

    def poll(self) -> int:
        """Read what was appended since the last call; how many audit records it made."""
        try:
            size = self.path.stat().st_size
            if size < self._offset:  # rotated or truncated: start over
                self._offset, self._partial = 0, b""
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read(max(0, size - self._offset))
        except OSError as exc:
            logger.warning("cannot read Mosquitto's log %s: %s", self.path, exc)
            return 0
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()[-_MAX_LINE:]
        made = 0
        for raw in chunks:
            self.lines += 1
            line = raw[:_MAX_LINE].decode("utf-8", "replace")
            connection = _NEW_CONNECTION.search(line)
            if connection:
                self._last_address = connection.group(1)
                continue
            found = parse_line(line)
            if found is None:
                continue
            kind, subject, reason, detail = found
            if kind == AuditKind.AUTH_FAILURE and not subject:
                subject = self._last_address
            if self.audit.record(kind, subject, reason, detail) is not None:
                made += 1
        return made

    def follow(self, stop: threading.Event, interval: float = 1.0) -> threading.Thread:
        """Poll every ``interval`` seconds in a daemon thread until ``stop`` is set."""
        def run() -> None:
            while not stop.wait(interval):
                self.poll()

        thread = threading.Thread(target=run, name="edgebus-mosquitto-log-audit", daemon=True)
        thread.start()
        return thread
