"""The agent's half of "never two owners" when the balancer evacuates a dead agent's cameras.

A camera whose owner went offline is given to another agent by a
transaction the old owner takes no part in (it cannot vote), and the
placement table (retained on ``{root}/_sys/placement/{group}/table``)
records the old owner as revoked. This fence makes that safe:

* **lease**: once the agent has been cut off from the broker for ``lease_s``
  it stops every camera pipeline (they stay its own on disk and in
  ``state/cameras``; nothing runs), before the coordinator may evacuate them
  (``evacuate_after_ms`` after the will, which must exceed the lease);
* **reconcile**: at start-up and after every reconnect that followed a
  fence, the agent starts nothing until it has read the retained table (or
  waited ``table_wait_s`` and found none: no placer has ever placed), then
  durably releases every camera the table gives to another agent or revokes
  from it, and starts the rest;
* **after any reconnect** (a pause too short for the lease, a SIGSTOP), the
  first table that arrives is checked the same way against what runs: the
  broker may have published the will meanwhile, and the camera may have been
  evacuated. Until that table arrives (a round trip after the reconnect) the
  cameras keep running: that moment is the residual overlap.

Off unless ``[transactions] placement_lease_s`` is set (agents in a fleet the
coordinator balances). The argument and its assumptions are in
:mod:`coordinator.placement` and the README's "Load balancing".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agents.camera.assignments import CameraAssignments
from agents.extension import AgentExtension
from broker.router import ReceivedMessage
from broker.session import BusSession

__all__ = ["PlacementFence", "cameras_to_drop"]

logger = logging.getLogger(__name__)


class FencedHost(Protocol):
    def suspend(self) -> list[str]: ...

    @property
    def suspended(self) -> list[str]: ...

    def resume(self, drop: list[str]) -> None: ...

    @property
    def cameras(self) -> list[str]: ...

    def stop_camera(self, camera: str) -> None: ...


def cameras_to_drop(table: Mapping[str, Any] | None, device: str, owned: list[str]) -> list[str]:
    """Of ``owned``, the cameras the placement table gives to another agent or revokes from ``device``."""
    if not table:
        return []
    owners = table.get("owners", {})
    revoked = table.get("revoked", {})
    drop = []
    for cam in owned:
        owner = owners.get(cam, {}).get("agent") if isinstance(owners.get(cam), Mapping) else None
        if (owner is not None and owner != device) or device in revoked.get(cam, ()):
            drop.append(cam)
    return drop


class PlacementFence(AgentExtension):
    """See the module docstring; checks the connection every ``tick_s``."""

    name = "placement-fence"

    def __init__(self, session: BusSession, group: str, device: str, host: FencedHost,
                 assignments: CameraAssignments, lease_s: float, *, table_wait_s: float = 3.0,
                 tick_s: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.device = device
        self.host = host
        self.assignments = assignments
        self.lease_s = lease_s
        self.table_wait_s = table_wait_s
        self.tick_s = tick_s
        self._clock = clock
        self._topic = session.topics.sys("placement", group, "table")
        self._table: dict[str, Any] | None = None
        self._table_at = -1.0
        self._lock = threading.Lock()
        self._fenced = True  # the host starts suspended: nothing runs before the table is read
        self._recheck = False  # a reconnect happened: check the next table against what runs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fenced(self) -> bool:
        return self._fenced

    def start(self) -> None:
        self.session.subscribe(self._topic, self._on_table)
        self.session.on_connect(self._on_connect)
        self._thread = threading.Thread(target=self._run, name="placement-fence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _on_connect(self, _session: BusSession) -> None:
        self._recheck = True

    def _on_table(self, msg: ReceivedMessage) -> None:
        try:
            body = json.loads(msg.payload) if msg.payload else None
        except ValueError as exc:
            logger.warning("placement fence: ignoring an unreadable placement table: %s", exc)
            return
        with self._lock:
            self._table = body if isinstance(body, dict) else None
            self._table_at = self._clock()
            recheck, self._recheck = self._recheck and not self._fenced, False
        if recheck:
            drop = cameras_to_drop(self._table, self.device, self.host.cameras)
            for cam in drop:
                self.assignments.release(cam)
                self.host.stop_camera(cam)
            if drop:
                logger.warning("placement fence: %s moved to other agents while this one was cut off; "
                               "stopped", ", ".join(drop))

    def _run(self) -> None:
        last_connected = self._clock()
        connected_since: float | None = None
        while not self._stop.wait(self.tick_s):
            now = self._clock()
            if self.session.is_connected:
                last_connected = now
                connected_since = now if connected_since is None else connected_since
            else:
                connected_since = None
            if not self._fenced and connected_since is None and now - last_connected > self.lease_s:
                names = self.host.suspend()
                self._fenced = True
                logger.warning("placement fence: cut off from the broker for %.1f s (lease %.1f s): "
                               "stopped %s until the placement table is read", now - last_connected,
                               self.lease_s, ", ".join(names) or "no cameras")
            if self._fenced and connected_since is not None:
                with self._lock:
                    table, heard = self._table, self._table_at >= connected_since - self.tick_s
                if heard or now - connected_since >= self.table_wait_s:
                    self._release(table)

    def _release(self, table: Mapping[str, Any] | None) -> None:
        drop = cameras_to_drop(table, self.device, self.host.suspended)
        for cam in drop:
            self.assignments.release(cam)  # durable first: a crash now restarts without it
        self.host.resume(drop)
        with self._lock:
            self._fenced = False
            self._recheck = False
        if drop:
            logger.warning("placement fence: %s moved to other agents while this one was away; dropped",
                           ", ".join(drop))
        logger.info("placement fence: reconciled with the placement table (%s); cameras run",
                    "read" if table else "none published")
