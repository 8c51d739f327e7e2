"""The operator's say over placement: pin a workload to agents, cordon an agent, drain an agent.

* **pin**: the workload may run only on these agents (on top of the agents that
  can reach it); if it runs elsewhere, it is moved.
* **cordon**: the agent takes nothing new; what it runs stays (and may still be
  moved off when it is overloaded).
* **drain**: cordon, and move everything off it (at the move budget's pace), e.g.
  before maintenance. It ends with nothing once the rest of the fleet has room.

The controls are operator configuration: strict, and every error names the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.placement.validation import agent_id, agent_ids, frozen, workload_id
from schemas.errors import ConfigError
from schemas.record_base import empty_map

__all__ = ["OperatorControls"]


@dataclass(frozen=True, slots=True)
class OperatorControls:
    """Pins (workload -> the agents it may run on), cordoned agents, drained agents.

    >>> c = OperatorControls().pin("door", ["gw-1", "gw-2"]).drain("gw-3")
    >>> c.allows("door", "gw-3"), c.takes_new_work("gw-3"), c.takes_new_work("gw-1")
    (False, False, True)
    >>> OperatorControls.from_json(c.to_json()) == c
    True
    """

    pins: Mapping[str, frozenset[str]] = field(default_factory=empty_map)
    cordoned: frozenset[str] = frozenset()
    drained: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.pins, Mapping):
            raise ConfigError("pins must map a workload to the agents it may run on")
        pins: dict[str, frozenset[str]] = {}
        for w, agents in self.pins.items():
            workload_id("pins: workload", w, ConfigError)
            pins[w] = agent_ids(f"pins[{w!r}]", agents, ConfigError)
            if not pins[w]:
                raise ConfigError(f"pins[{w!r}] is empty: the workload could run nowhere (unpin it instead)")
        object.__setattr__(self, "pins", frozen(pins))
        object.__setattr__(self, "cordoned", agent_ids("cordoned", self.cordoned, ConfigError))
        object.__setattr__(self, "drained", agent_ids("drained", self.drained, ConfigError))

    def takes_new_work(self, agent: str) -> bool:
        return agent not in self.cordoned and agent not in self.drained

    def allows(self, workload: str, agent: str) -> bool:
        """False if ``workload`` is pinned to agents that do not include ``agent``."""
        pinned = self.pins.get(workload)
        return pinned is None or agent in pinned

    def pin(self, workload: str, agents: Iterable[str]) -> OperatorControls:
        return OperatorControls({**self.pins, workload: frozenset(agents)}, self.cordoned, self.drained)

    def unpin(self, workload: str) -> OperatorControls:
        return OperatorControls({w: a for w, a in self.pins.items() if w != workload}, self.cordoned,
                                self.drained)

    def cordon(self, agent: str) -> OperatorControls:
        agent = agent_id("cordon", agent, ConfigError)
        return OperatorControls(self.pins, self.cordoned | {agent}, self.drained)

    def uncordon(self, agent: str) -> OperatorControls:
        return OperatorControls(self.pins, self.cordoned - {agent}, self.drained)

    def drain(self, agent: str) -> OperatorControls:
        agent = agent_id("drain", agent, ConfigError)
        return OperatorControls(self.pins, self.cordoned, self.drained | {agent})

    def undrain(self, agent: str) -> OperatorControls:
        return OperatorControls(self.pins, self.cordoned, self.drained - {agent})

    def to_json(self) -> dict[str, Any]:
        return {"pins": {w: sorted(a) for w, a in self.pins.items()},
                "cordoned": sorted(self.cordoned), "drained": sorted(self.drained)}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OperatorControls:
        """Controls from ``{"pins": {...}, "cordoned": [...], "drained": [...]}`` (every key optional)."""
        if not isinstance(body, Mapping):
            raise ConfigError("placement controls must be an object")
        unknown = sorted(set(body) - {"pins", "cordoned", "drained"})
        if unknown:
            raise ConfigError(f"placement controls: unknown key {unknown[0]!r} "
                              "(known: pins, cordoned, drained)")
        pins = body.get("pins", {})
        if not isinstance(pins, Mapping):
            raise ConfigError("placement controls: pins must map a workload to a list of agents")
        return cls(dict(pins), frozenset(agent_ids("cordoned", body.get("cordoned", ()), ConfigError)),
                   frozenset(agent_ids("drained", body.get("drained", ()), ConfigError)))
