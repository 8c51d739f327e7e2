"""``edge-coordinator placement``: see the placement table and steer it (pin, cordon, drain) over the bus.

The controls live retained on ``{root}/_sys/placement/{group}/controls``; a
command reads them, changes one thing and publishes them back, and the placer
applies them in its next round (its decisions topic and ``placement show``
say so). Two operators changing controls at the same instant can overwrite
each other's change: run ``placement show`` to see what is in effect.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from broker.router import ReceivedMessage
from broker.session import BusConfig, BusSession
from coordinator.placement.topics import PlacementTopics
from protocols.placement import OperatorControls
from schemas.errors import BusError, ConfigError

__all__ = ["ACTIONS", "apply_control", "format_table", "read_placement"]

#: action -> (arguments it takes, what it does)
ACTIONS: Mapping[str, tuple[str, str]] = {
    "show": ("", "print the placement table, controls and latest decisions"),
    "pin": ("CAMERA AGENT [AGENT ...]", "run CAMERA only on these agents (moved if it runs elsewhere)"),
    "unpin": ("CAMERA", "let CAMERA run on any agent again"),
    "cordon": ("AGENT", "AGENT takes no new work (what it runs stays)"),
    "uncordon": ("AGENT", "AGENT takes work again"),
    "drain": ("AGENT", "move everything off AGENT (at the move budget's pace), e.g. before maintenance"),
    "undrain": ("AGENT", "stop draining AGENT (it takes work again)"),
}


def _session(bus: BusConfig) -> BusSession:
    return BusSession(replace(bus, client_id=f"placement-cli-{uuid.uuid4().hex[:8]}", clean_start=True,
                              device=None, outbox_path=None))


def read_placement(bus: BusConfig, group: str, wait_s: float = 1.5) -> tuple[dict[str, Any] | None,
                                                                                OperatorControls]:
    """The retained table (None if no placer published one yet) and controls (empty if none)."""
    session = _session(bus)
    topics = PlacementTopics(session.topics, group)
    got: dict[str, bytes] = {}
    done = threading.Event()

    def on(msg: ReceivedMessage) -> None:
        got[msg.topic] = msg.payload
        if len(got) == 2:
            done.set()

    session.subscribe(topics.table, on)
    session.subscribe(topics.controls, on)
    session.start()
    try:
        if not session.wait_connected(bus.connect_timeout + 5) or not session.wait_subscribed(10):
            raise BusError(f"cannot reach the broker at {bus.host}:{bus.port}")
        done.wait(wait_s)  # retained messages follow the SUBACK at once; absent ones never come
    finally:
        session.stop(flush_timeout=0)
    table = json.loads(got[topics.table]) if got.get(topics.table) else None
    controls_body = got.get(topics.controls)
    controls = OperatorControls.from_json(json.loads(controls_body)) if controls_body else OperatorControls()
    return table, controls


def apply_control(bus: BusConfig, group: str, action: str, args: Sequence[str]) -> OperatorControls:
    """Change one control and publish the controls retained; the new controls returned."""
    _, controls = read_placement(bus, group)
    need_one = action in ("unpin", "cordon", "uncordon", "drain", "undrain")
    if need_one and len(args) != 1:
        raise ConfigError(f"placement {action} takes {ACTIONS[action][0]}, not {' '.join(args) or 'nothing'}")
    if action == "pin":
        if len(args) < 2:
            raise ConfigError("placement pin takes CAMERA AGENT [AGENT ...]")
        controls = controls.pin(args[0], args[1:])
    elif action == "unpin":
        controls = controls.unpin(args[0])
    elif action in ("cordon", "uncordon", "drain", "undrain"):
        controls = getattr(controls, action)(args[0])
    else:
        raise ConfigError(f"unknown placement action {action!r} (known: {', '.join(ACTIONS)})")
    session = _session(bus)
    session.start()
    try:
        if not session.wait_connected(bus.connect_timeout + 5):
            raise BusError(f"cannot reach the broker at {bus.host}:{bus.port}")
        session.publish(PlacementTopics(session.topics, group).controls,
                        json.dumps(controls.to_json(), sort_keys=True), retain=True)
        if not session.flush(10):
            raise BusError("the broker did not acknowledge the new controls")
    finally:
        session.stop(flush_timeout=1)
    return controls


def format_table(table: Mapping[str, Any] | None, controls: OperatorControls,
                 now_ms: int | None = None) -> str:
    """The table for people: agents and their cameras, controls, blocked work, latest decisions."""
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    c = controls.to_json()
    pins = ", ".join(f"{w}->{'/'.join(a)}" for w, a in c["pins"].items()) or "-"
    cordoned, drained = ", ".join(c["cordoned"]) or "-", ", ".join(c["drained"]) or "-"
    lines = [f"controls: cordoned {cordoned}; drained {drained}; pins {pins}"]
    if table is None:
        return "\n".join([*lines, "no placement table yet (is a coordinator with [placement] running?)"])
    age = (now_ms - int(table.get("updated_ms", now_ms))) / 1000
    lines.insert(0, f"placer {table.get('placer')} (token {table.get('token')}), group {table.get('group')}, "
                    f"updated {age:.0f} s ago")
    by_agent: dict[str, list[str]] = {}
    for cam, owner in sorted(table.get("owners", {}).items()):
        by_agent.setdefault(owner["agent"], []).append(cam)
    for agent, cams in sorted(by_agent.items()):
        lines.append(f"  {agent}: {', '.join(cams)}")
    for cam, agents in sorted(table.get("revoked", {}).items()):
        lines.append(f"  revoked: {cam} from {', '.join(agents)} (evacuated while it was away)")
    for blocked in table.get("blocked", []):
        lines.append(f"  blocked: {blocked}")
    if table.get("advice"):
        lines.append(f"bottleneck: {table['advice']}")
    decisions = table.get("decisions", [])[-10:]
    if decisions:
        lines.append("latest decisions:")
    for d in decisions:
        when = time.strftime("%H:%M:%S", time.gmtime(int(d.get("time_ms", 0)) / 1000))
        if d.get("kind") == "move":
            lines.append(f"  {when} {d.get('reason')}: {d.get('workload')} {d.get('source') or '-'} -> "
                         f"{d.get('target')} [{d.get('outcome')}] {d.get('detail', '')}")
        else:
            lines.append(f"  {when} {d.get('kind')}: {d.get('detail', '')}")
    return "\n".join(lines)
