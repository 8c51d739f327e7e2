"""The coordinator consults the fleet decision log: a quarantine or a model acceptance takes effect only once
the BFT group decided it.

``[decisions]`` (off without the table) names a signed PBFT group file running
``fleet_log`` (protocols/pbft/fleet_log.py), the trust root its signature must
verify against, and the coordinator's own client identity and key in that
group. The coordinator follows the log by ordered reads through PBFT
(``{"op": "read", "since": n}``, accepted on f+1 matching replies, so at least
one honest replica vouches for every page): a device is quarantined here (its
messages refused by ingest as ``quarantined`` dead letters) only after
``decision_quorum`` distinct proposers asked for it and the group decided. The
coordinator's own :meth:`FleetDecisions.propose` is one vote, never a decision.

What it follows is published retained on ``{root}/_sys/bft/{group}/decided``
(JSON, schemas/FORMAT.md) and logged once per decision. A group that does not
answer leaves the last decided state in force: nothing is undone by silence.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.bft import BftClient, BftGroup, BftTopics, load_group, load_signer
from broker.config_values import check_section_keys, float_option
from broker.session import BusConfig
from coordinator.ingest import Ingest
from protocols.pbft import Decision
from schemas.errors import ConfigError, CoordinationTimeout

__all__ = ["DecisionsConfig", "FleetDecisions"]

logger = logging.getLogger(__name__)

_KEYS = ("group", "trust", "identity", "key", "poll_s", "timeout_s")


@dataclass(frozen=True, slots=True)
class DecisionsConfig:
    """``[decisions]``: group (the signed group file), trust, identity, key; poll_s, timeout_s."""

    group: Path
    trust: Path
    identity: str
    key: Path
    poll_s: float = 1.0
    timeout_s: float = 5.0

    @classmethod
    def from_mapping(cls, data: object) -> DecisionsConfig | None:
        """None when no ``[decisions]`` table is given: the coordinator consults no decision log."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError("decisions must be a table ([decisions])")
        check_section_keys("decisions", data, _KEYS)
        for key in ("group", "trust", "identity", "key"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"decisions.{key} is required (a string)")
        return cls(Path(data["group"]), Path(data["trust"]), data["identity"], Path(data["key"]),
                   float_option("decisions", data, "poll_s", 1.0, low=0.01, high=3600.0),
                   float_option("decisions", data, "timeout_s", 5.0, low=0.1, high=600.0))

    def load(self) -> BftGroup:
        """The verified group; ConfigError when it is unsigned, not a fleet_log, or lacks our identity."""
        group = load_group(self.group, self.trust)
        if group.state_machine != "fleet_log":
            raise ConfigError(f"decisions.group {self.group}: runs {group.state_machine!r}, not 'fleet_log'")
        if self.identity not in group.clients:
            raise ConfigError(f"decisions.identity {self.identity!r} is not a client of group {group.name} "
                              f"(clients: {', '.join(group.clients) or 'none'})")
        return group


class FleetDecisions:
    """Follows the decided log; ``on_quarantined`` listeners get the whole quarantined set on each change."""

    def __init__(self, config: DecisionsConfig, bus: BusConfig) -> None:
        self.config = config
        self.group = config.load()
        signer = load_signer(config.identity, config.key)
        self.client = BftClient(self.group, signer, bus)
        self.topics = BftTopics(bus.root, self.group.name)
        self.decisions: list[Decision] = []
        self.quarantined: frozenset[str] = frozenset()
        self.models: dict[str, str] = {}
        self.on_quarantined: list[Callable[[frozenset[str]], None]] = []
        self.last_error: str | None = None
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refuse_in(self, ingest: Ingest) -> None:
        """``ingest`` refuses the quarantined devices' messages, now and whenever the decided set changes."""
        def update(devices: frozenset[str]) -> None:
            ingest.quarantined = devices

        self.on_quarantined.append(update)
        update(self.quarantined)

    def start(self) -> FleetDecisions:
        self.client.start(self.config.timeout_s)
        self._thread = threading.Thread(target=self._run, name="fleet-decisions", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 1)
        self.client.stop()

    def propose(self, op: str, **fields: str) -> dict[str, Any]:
        """Cast the coordinator's vote (quarantine/release device=..., accept_model group=... version=...)."""
        result: dict[str, Any] = json.loads(self.client.submit(json.dumps({"op": op, **fields}).encode(),
                                                                self.config.timeout_s))
        return result

    def poll(self) -> int:
        """Read what was decided since the last poll and apply it; the number of new decisions."""
        doc = json.loads(self.client.submit(json.dumps({"op": "read", "since": len(self.decisions)}).encode(),
                                            self.config.timeout_s))
        new = [Decision.from_json(d) for d in doc.get("decisions", [])]
        for d in new:
            if d.index != len(self.decisions) + 1:
                raise ValueError(f"decision {d.index} out of order (have {len(self.decisions)})")
            self.decisions.append(d)
            logger.warning("fleet decision %d: %s %s %s (proposed by %s)", d.index, d.kind, d.subject,
                           d.value if d.kind == "accept_model" else "", ", ".join(d.proposers))
        if new:
            self._apply()
        return len(new)

    def _apply(self) -> None:
        quarantined, models = set(), {}
        for d in self.decisions:
            if d.kind == "quarantine":
                quarantined.add(d.subject)
            elif d.kind == "release":
                quarantined.discard(d.subject)
            else:
                models[d.subject] = d.value
        changed = frozenset(quarantined) != self.quarantined
        with self.changed:
            self.quarantined, self.models = frozenset(quarantined), models
            self.changed.notify_all()
        if changed:
            for listener in self.on_quarantined:
                listener(self.quarantined)
        self.client.transport.publish(self.topics.decided, json.dumps(self.status_doc()), qos=1, retain=True)

    def status_doc(self) -> dict[str, Any]:
        return {"group": self.group.name, "decisions": len(self.decisions),
                "quarantined": sorted(self.quarantined), "models": dict(sorted(self.models.items())),
                "last": self.decisions[-1].to_json() if self.decisions else None, "time": time.time()}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.poll() and not self._stop.is_set():
                    pass  # a full page: read the next one now
                self.last_error = None
            except (CoordinationTimeout, ValueError) as exc:
                if self.last_error is None:
                    logger.warning("fleet decision log %s: %s (the last decided state stays in force)",
                                   self.group.name, exc)
                self.last_error = str(exc)
            self._stop.wait(self.config.poll_s)
