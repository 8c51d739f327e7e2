"""Anomaly actions: a matching alert publishes a configured command to a group of devices.

Configuration (``[[actions]]``, any number)::

    [[actions]]
    name = "throttle"         # for logs (default actions[N])
    when = "critical"         # the least severity that fires: "critical" (default) or "warning"
    metric = "cpu_*"          # glob on the alert's metric (default "*")
    device = "gw-*"           # glob on the alerting device (default "*")
    command = "config"        # the command name, sent on {root}/{device}/cmd/{command}
    args = { max_fps = 5 }    # the command's arguments (default none)
    to = ["gw-*"]             # device globs; "{device}" stands for the alerting device
    cooldown_s = 300          # per alerting device, at most one firing per cooldown (default 300)

Targets are the devices the coordinator has seen a birth or status from. Each
alert opens one episode, so each fires a rule at most once; the cooldown keeps
a device that flaps between episodes from flooding its group.
"""

from __future__ import annotations

import fnmatch
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.session import BusSession
from coordinator.anomaly.alert import Alert, Severity
from coordinator.anomaly.options import check_keys, float_option, str_option
from schemas.errors import BusError, CodecError, ConfigError
from schemas.messages import Command, encode_record

__all__ = ["ActionRule", "Actions", "parse_actions"]

logger = logging.getLogger(__name__)

_KEYS = {"name", "when", "metric", "device", "command", "args", "to", "cooldown_s"}
_RANK = {Severity.WARNING: 0, Severity.CRITICAL: 1}


@dataclass(frozen=True, slots=True)
class ActionRule:
    """One ``[[actions]]`` table, checked."""

    name: str
    command: str
    to: tuple[str, ...]
    when: Severity = Severity.CRITICAL
    metric: str = "*"
    device: str = "*"
    args: Mapping[str, Any] = field(default_factory=dict)
    cooldown_s: float = 300.0

    def matches(self, alert: Alert) -> bool:
        return (_RANK[alert.severity] >= _RANK[self.when] and fnmatch.fnmatchcase(alert.metric, self.metric)
                and fnmatch.fnmatchcase(alert.device, self.device))

    def targets(self, alert: Alert, known: Sequence[str]) -> list[str]:
        globs = [g.replace("{device}", alert.device) for g in self.to]
        return [d for d in known if any(fnmatch.fnmatchcase(d, g) for g in globs)]


def _glob(where: str, table: Mapping[str, Any], key: str) -> str:
    value = table.get(key, "*")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty glob string, not {value!r}")
    return value


def _rule(where: str, table: object) -> ActionRule:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table ([[actions]])")
    check_keys(where, table, _KEYS)
    name = table.get("name", where)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string, not {name!r}")
    when = Severity(str_option(where, table, "when", "critical", choices={s.value for s in Severity}))
    if "command" not in table:
        raise ConfigError(f"{where}: command is required (the command name to send)")
    command, args = table["command"], table.get("args", {})
    if not isinstance(command, str):
        raise ConfigError(f"{where}: command must be a string, not {command!r}")
    if not isinstance(args, Mapping):
        raise ConfigError(f"{where}: args must be a table, not {args!r}")
    try:  # the same checks the real commands will get
        Command(device="check", name=command, command_id="check", time_ms=0, args=args)
    except CodecError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    to = table.get("to")
    if (not isinstance(to, list) or not to
            or not all(isinstance(g, str) and g for g in to)):
        raise ConfigError(f"{where}: to must be a non-empty list of device globs, not {to!r}")
    return ActionRule(name=name, command=command, to=tuple(to), when=when,
                      metric=_glob(where, table, "metric"), device=_glob(where, table, "device"),
                      args=dict(args), cooldown_s=float_option(where, table, "cooldown_s", 300.0,
                                                               low=0.0, high=30 * 86400.0))


def parse_actions(tables: object) -> list[ActionRule]:
    """The ``[[actions]]`` array (None or empty: no actions)."""
    if tables is None:
        return []
    if not isinstance(tables, list):
        raise ConfigError("actions must be an array of tables ([[actions]])")
    return [_rule(f"actions[{i}]", t) for i, t in enumerate(tables)]


class Actions:
    """An alert listener: fires the matching rules (see the module docstring)."""

    def __init__(self, session: BusSession, rules: Sequence[ActionRule], known: Callable[[], list[str]], *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.session = session
        self.rules = list(rules)
        self._known = known
        self._clock = clock
        self._now_ms = wall_clock_ms
        self._last_fired: dict[tuple[int, str], float] = {}
        self.fired = 0
        self.suppressed = 0
        self.commands_sent = 0

    def __call__(self, alert: Alert) -> None:
        for index, rule in enumerate(self.rules):
            if not rule.matches(alert):
                continue
            now = self._clock()
            last = self._last_fired.get((index, alert.device))
            if last is not None and now - last < rule.cooldown_s:
                self.suppressed += 1
                logger.info("action %s for %s/%s suppressed (cooldown %.0fs)", rule.name, alert.device,
                            alert.metric, rule.cooldown_s)
                continue
            self._last_fired[(index, alert.device)] = now
            self.fired += 1
            targets = rule.targets(alert, self._known())
            sent = sum(self._send(rule, target) for target in targets)
            self.commands_sent += sent
            logger.warning("action %s on %s %s/%s: command %s sent to %d of %d devices (%s)", rule.name,
                           alert.severity.value, alert.device, alert.metric, rule.command, sent,
                           len(targets), ", ".join(targets) or "none known")

    def _send(self, rule: ActionRule, target: str) -> bool:
        command = Command(device=target, name=rule.command, command_id=uuid.uuid4().hex,
                          time_ms=self._now_ms(), args=rule.args)
        try:
            return self.session.publish(self.session.topics.cmd(target, rule.command), encode_record(command),
                                        qos=1)
        except BusError as exc:
            logger.warning("action %s: command to %s not sent: %s", rule.name, target, exc)
            return False
