"""The placer: the one coordinator holding the placement lock plans and moves cameras; the others stand by.

Every coordinator with ``[placement]`` runs a :class:`PlacementService`: it
follows the fleet (births, wills, metrics, ``state/cameras``), the retained
placement table and the operator's controls, and waits for the lock
``placement.lock`` of the group's lock service. The holder (its fencing
token in hand) plans every ``interval_s`` with the pure planner
(protocols/placement/) and carries each move out as a two-phase commit
(:mod:`coordinator.camera_moves`); before each move it checks that it still
holds the lock under the same token, and stops placing the moment it does
not. A standby that gets the lock continues from the retained table (its
in-flight records are closed: the agents' reports say how they ended).

Why no camera ever has two owners, see :mod:`coordinator.placement`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from broker.coordination.lock_client import LockClient
from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from broker.twopc.client import TxClient
from coordinator.camera_moves import move_camera, take_camera
from coordinator.placement.config import PlacementConfig
from coordinator.placement.fleet import FleetState
from coordinator.placement.table import PlacementTable
from coordinator.placement.topics import PlacementTopics
from protocols.placement import (
    Move,
    MoveRecord,
    OperatorControls,
    PlanInput,
    Planner,
    bottleneck_advice,
    rank_bottlenecks,
)
from schemas.errors import ConfigError, CoordinationError, TxAborted

__all__ = ["PlacementService"]

logger = logging.getLogger(__name__)

#: How long a new placer waits for every online camera agent's first load report before planning without.
WARMUP_MS = 15_000

DecisionSink = Callable[[Mapping[str, Any]], None]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class PlacementService:
    """See the module docstring. ``decision_sink`` keeps each decision (the store)."""

    def __init__(self, bus: BusConfig, config: PlacementConfig, name: str, *,
                 decision_sink: DecisionSink | None = None, clock_ms: Callable[[], int] = _wall_ms) -> None:
        self.config = config
        self.name = name
        self.bus = bus
        self._sink = decision_sink
        self._now = clock_ms
        self._id = f"{name}-{uuid.uuid4().hex[:8]}"  # a restarted coordinator is a new lock session
        self.session = BusSession(replace(bus, client_id=f"{self._id}-placement", clean_start=True,
                                          device=None, outbox_path=None))
        self.topics = PlacementTopics(self.session.topics, config.group)
        self.fleet = FleetState(config.cpu_metric, config.memory_metric)
        self.planner = Planner(config.planner)
        self.tx = TxClient(self.session, config.group, f"{self._id}-placer", retry_s=0.3)
        self.table = PlacementTable()
        self.controls = OperatorControls()
        self._seen_controls: OperatorControls | None = None
        self._retained_table: dict[str, Any] | None = None
        self._state_lock = threading.Lock()
        self.locks: LockClient | None = None
        self.token: int | None = None
        self.rounds = 0
        self._placing_since_ms = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        root = self.session.topics
        sub = self.session.subscribe
        fleet = self.fleet
        sub(root.all_births(), lambda m: fleet.on_birth(m.topic.split("/")[-2], m.payload))
        sub(root.all_status(), lambda m: fleet.on_status(m.topic.split("/")[-2], m.payload, self._now()))
        sub(root.all_metrics(), lambda m: fleet.on_metrics(m.topic.split("/")[-2], m.payload, self._now()))
        sub(f"{root.root}/+/state/cameras", lambda m: fleet.on_cameras(m.topic.split("/")[-3], m.payload))
        sub(self.topics.table, self._on_table)
        sub(self.topics.controls, self._on_controls)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.session.start()
        self._thread = threading.Thread(target=self._run, name="placer", daemon=True)
        self._thread.start()
        logger.info("placement: %d cameras in group %s; waiting for the placer lock %s",
                    len(self.config.cameras), self.config.group, self.config.lock)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.move_timeout_s + 5)
        if self.locks is not None:
            self.locks.close()  # closes the lock session: a standby may place at once
        self.session.stop(flush_timeout=1)

    @property
    def placing(self) -> bool:
        return self.token is not None

    # -- what arrives -------------------------------------------------------------------------

    def _on_table(self, msg: ReceivedMessage) -> None:
        if not msg.payload:
            return
        try:
            body = json.loads(msg.payload)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            logger.warning("placement: ignoring an unreadable placement table: %s", exc)
            return
        with self._state_lock:
            self._retained_table = body

    def _on_controls(self, msg: ReceivedMessage) -> None:
        try:
            controls = OperatorControls.from_json(json.loads(msg.payload) if msg.payload else {})
        except (ValueError, ConfigError) as exc:
            logger.error("placement: refusing the operator controls on %s: %s", msg.topic, exc)
            return
        with self._state_lock:
            self.controls = controls

    # -- the placer loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.token is None:
                    self._campaign()
                if self.token is not None:
                    self._round()
            except CoordinationError as exc:
                logger.warning("placement: %s", exc)
            except Exception:  # one bad round must not end placing for good
                logger.exception("placement: a planning round failed")
            self._stop.wait(self.config.interval_s if self.token is not None else 0.2)

    def _campaign(self) -> None:
        if self.locks is None:
            self.locks = LockClient.connect(self.bus, self.config.group, f"{self._id}-lock",
                                            ttl_ms=self.config.placer_ttl_ms, timeout=5.0)
        try:
            token = self.locks.acquire(self.config.lock, timeout=self.config.interval_s)
        except CoordinationError:
            return  # another coordinator places; keep waiting
        self._take_over(token)

    def _take_over(self, token: int) -> None:
        now = self._now()
        with self._state_lock:
            retained = self._retained_table
        table = PlacementTable()
        if retained is not None:
            try:
                table = PlacementTable.from_json(retained)
            except ValueError as exc:
                logger.warning("placement: starting from an empty table: %s", exc)
        # The previous placer's moves in flight ended one way or the other; the reports tell which.
        table.moves = [r.finish(False, max(now, r.started_ms)) if r.in_flight else r for r in table.moves]
        previous = table.token
        table.token = token
        self.table = table
        self.token = token
        self._placing_since_ms = now
        self._decide({"kind": "takeover", "detail": f"{self.name} places now (token {token}; "
                                                    f"previous {previous or 'none'})"}, now)
        logger.warning("placement: %s holds the placer lock (token %d) and places", self.name, token)
        self._publish_table(now)

    def _still_placer(self) -> bool:
        """Check the fencing token with the lock service; stop placing if it is no longer ours."""
        assert self.locks is not None and self.token is not None
        if self.locks.session_lost.is_set():
            return self._lose("the lock session lapsed")
        try:
            token = self.locks.acquire(self.config.lock, wait=False, timeout=2.0)
        except CoordinationError as exc:
            return self._lose(f"the lock is not ours: {exc}")
        if token != self.token:
            self.locks.release(self.config.lock, token)
            return self._lose(f"the lock was lost and regained under token {token}")
        return True

    def _lose(self, why: str) -> bool:
        logger.warning("placement: %s stops placing (token %s): %s", self.name, self.token, why)
        self.token = None
        return False

    def _round(self) -> None:
        now = self._now()
        snap = self.fleet.snapshot()
        if snap.unknown:
            logger.info("placement: waiting for the birth and status of %s", ", ".join(snap.unknown))
            return
        if snap.unmeasured and now - self._placing_since_ms < WARMUP_MS:
            logger.info("placement: waiting for the first load report of %s", ", ".join(snap.unmeasured))
            return
        cams = [c.name for c in self.config.cameras]
        # Agents apply a committed move when they hear the decision: their reports may lag by that much.
        grace = int(2000 * self.config.move_timeout_s)
        for warning in self.table.observe(cams, snap.reported, snap.online, now, grace):
            logger.error("placement: %s", warning)
        with self._state_lock:
            controls = self.controls
        if controls != self._seen_controls:
            if self._seen_controls is not None or controls != OperatorControls():
                self._decide({"kind": "controls", "detail": json.dumps(controls.to_json(), sort_keys=True)},
                             now)
            self._seen_controls = controls
        window = max(self.config.planner.budget_window_ms, self.config.planner.settle_ms)
        plan_input = PlanInput(
            now, snap.agents, tuple(c.workload() for c in self.config.cameras), self.table.placement(cams),
            self.table.recent(now, window), controls)
        plan = self.planner.plan(plan_input)
        self.rounds += 1
        self.table.bottlenecks = [b.to_json() for b in rank_bottlenecks(snap.agents)[:5]]
        self.table.advice = bottleneck_advice(plan_input, planner_config=self.config.planner)
        self.table.blocked = [f"{b.workload}: {b.reason}" for b in (*plan.unplaced, *plan.stuck)]
        for move in plan.moves:
            if self._stop.is_set() or not self._still_placer():
                break
            self._execute(move, snap.online)
        self._publish_table(self._now())

    def _execute(self, move: Move, online: frozenset[str]) -> None:
        spec = self.config.camera(move.workload)
        assert spec is not None and self.token is not None
        started = self._now()
        record = MoveRecord.start(move, started)
        self.table.moves.append(record)
        base = {"kind": "move", **move.to_json()}
        self._decide({**base, "outcome": "started"}, started)
        self._publish_table(started)
        tx_id = f"place-{self.token}-{move.workload}-{started}"
        # A live source releases in the same transaction (it votes no if it does not run the camera);
        # a source that is offline cannot vote: the target takes, and the table revokes the source.
        release = move.source is not None and move.source in online
        try:
            if release:
                assert move.source is not None
                move_camera(self.tx, move.workload, move.source, move.target, spec.table,
                            timeout_s=self.config.move_timeout_s, tx_id=tx_id)
            else:
                take_camera(self.tx, move.workload, move.target, spec.table,
                            timeout_s=self.config.move_timeout_s, tx_id=tx_id)
            committed, outcome = True, "committed"
        except TxAborted as exc:
            committed, outcome = False, f"aborted: {exc.reason}"
        except CoordinationError as exc:
            committed, outcome = False, f"undecided: {exc}"
        finished = max(self._now(), started)
        done = record.finish(committed, finished)
        self.table.moves = [done if r is record else r for r in self.table.moves]
        if committed:
            self.table.moved(move.workload, move.source, move.target, finished, revoke=not release)
        self._decide({**base, "outcome": outcome, "took_ms": finished - started}, finished)
        logger.info("placement: %s %s %s -> %s: %s", move.reason, move.workload, move.source or "-",
                    move.target, outcome)

    def _decide(self, decision: Mapping[str, Any], now_ms: int) -> None:
        body = {"time_ms": now_ms, "placer": self.name, "token": self.token, **decision}
        self.table.decide(body)
        self.session.publish(self.topics.decisions, json.dumps(body, sort_keys=True))
        if self._sink is not None:
            try:
                self._sink(body)
            except Exception as exc:  # the store is down: the topic still has it
                logger.warning("placement: decision not stored: %s", exc)

    def _publish_table(self, now_ms: int) -> None:
        with self._state_lock:
            controls = self.controls.to_json()
        body = self.table.to_json(self.config.group, self.name, now_ms, controls)
        self.session.publish(self.topics.table, json.dumps(body, sort_keys=True), retain=True)
