"""A staged rollout: update a canary cohort first, halt on failures, then the rest.

The server drives it: it offers the update to the devices :meth:`Rollout.start`
returns, and reports each device's end (committed, failed, or no answer within
its own timeout) with :meth:`Rollout.on_outcome`, which returns whom to offer to
next. At most ``parallel`` devices update at once, so a bad update never takes
down more of the fleet than that, and the rest of the fleet is not touched until
the whole canary cohort has committed within the failure threshold.

Pure: the caller chooses the device order (sorted, or shuffled with its own
random generator) and owns the timeouts.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from schemas.ota import Phase

__all__ = ["Outcome", "Rollout", "RolloutPolicy", "RolloutStage", "outcome_of"]


class Outcome(enum.Enum):
    """How one device's update ended."""

    COMMITTED = "committed"
    FAILED = "failed"  # rolled_back, refused or failed
    TIMED_OUT = "timed_out"  # no terminal phase within the server's timeout


def outcome_of(phase: Phase) -> Outcome | None:
    """The rollout outcome a progress phase means, or None while the update is still under way."""
    if phase is Phase.COMMITTED:
        return Outcome.COMMITTED
    if phase in (Phase.ROLLED_BACK, Phase.REFUSED, Phase.FAILED):
        return Outcome.FAILED
    return None


@dataclass(frozen=True)
class RolloutPolicy:
    """How cautious a rollout is.

    ``canary_fraction``: the first ``max(1, ceil(f * n))`` devices form the canary
    (1 means no second stage). ``max_failure_fraction``: a stage halts the
    rollout when failures (failed or timed out) per decided device exceed it;
    0 means any failure halts. ``parallel``: devices updating at once.
    """

    canary_fraction: float = 0.1
    max_failure_fraction: float = 0.0
    parallel: int = 4

    def __post_init__(self) -> None:
        f = self.canary_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
            raise ValueError(f"canary_fraction must be in (0, 1], not {f!r}")
        m = self.max_failure_fraction
        if isinstance(m, bool) or not isinstance(m, int | float) or not 0 <= m <= 1:
            raise ValueError(f"max_failure_fraction must be in [0, 1], not {m!r}")
        if type(self.parallel) is not int or self.parallel < 1:
            raise ValueError(f"parallel must be an integer >= 1, not {self.parallel!r}")


class RolloutStage(enum.Enum):
    CANARY = "canary"
    REST = "rest"
    DONE = "done"
    HALTED = "halted"


_FAILURES = (Outcome.FAILED, Outcome.TIMED_OUT)


class Rollout:
    """Staged rollout: canary cohort, halt on failures, then the rest.

    A stage completes when each of its devices has an outcome; the REST stage
    starts only after the canary completed within the threshold. A stage halts
    as soon as its failures exceed ``max_failure_fraction`` of the stage, whatever
    its other devices do; then no new device is offered the update, and devices
    already updating still report their outcomes.
    """

    def __init__(self, devices: Sequence[str], policy: RolloutPolicy) -> None:
        if isinstance(devices, str):
            raise TypeError("devices must be a sequence of device ids, not one string")
        order = tuple(devices)
        twice = sorted(d for d, n in Counter(order).items() if n > 1)
        if twice:
            raise ValueError(f"devices listed more than once: {', '.join(twice)}")
        self._policy = policy
        canary_size = max(1, math.ceil(policy.canary_fraction * len(order))) if order else 0
        self._canary = order[:canary_size]
        self._rest = order[canary_size:]
        self._stage = RolloutStage.CANARY if order else RolloutStage.DONE
        self._queue: list[str] = list(self._canary)
        self._queue.reverse()  # pop() from the end offers in the given order
        self._pending: set[str] = set()
        self._results: dict[str, Outcome] = {}
        self._offered: set[str] = set()
        self._halted_reason: str | None = None
        self._started = False

    # -- state --------------------------------------------------------------------------

    @property
    def policy(self) -> RolloutPolicy:
        return self._policy

    @property
    def canary(self) -> tuple[str, ...]:
        return self._canary

    @property
    def rest(self) -> tuple[str, ...]:
        return self._rest

    @property
    def stage(self) -> RolloutStage:
        return self._stage

    @property
    def results(self) -> Mapping[str, Outcome]:
        return MappingProxyType(dict(self._results))

    @property
    def pending(self) -> frozenset[str]:
        """Devices offered the update that have no outcome yet."""
        return frozenset(self._pending)

    @property
    def halted_reason(self) -> str | None:
        return self._halted_reason

    @property
    def finished(self) -> bool:
        """Nothing more will happen: done, or halted with nobody still updating."""
        return self._stage is RolloutStage.DONE or (self._stage is RolloutStage.HALTED and not self._pending)

    # -- events -------------------------------------------------------------------------

    def start(self) -> list[str]:
        """The devices to offer the update to now (at most ``parallel``); empty when called again."""
        if self._started:
            return []
        self._started = True
        return self._fill()

    def on_outcome(self, device: str, outcome: Outcome) -> list[str]:
        """Record ``device``'s outcome; returns the devices to offer to next.

        A repeated outcome for a decided device is ignored (retained progress is
        delivered again on reconnect); an outcome for a device that was never
        offered the update raises :class:`ValueError`.
        """
        if not isinstance(outcome, Outcome):
            raise TypeError(f"outcome must be an Outcome, not {outcome!r}")
        if device in self._results:
            return []
        if device not in self._pending:
            raise ValueError(f"device {device!r} was not offered this update")
        self._pending.discard(device)
        self._results[device] = outcome
        if self._stage in (RolloutStage.HALTED, RolloutStage.DONE):
            return []
        stage_devices = self._canary if self._stage is RolloutStage.CANARY else self._rest
        failures = sum(1 for d in stage_devices if self._results.get(d) in _FAILURES)
        limit = self._policy.max_failure_fraction
        if failures / len(stage_devices) > limit:
            decided = sum(1 for d in stage_devices if d in self._results)
            self._halt(f"{self._stage.value}: {failures} of {len(stage_devices)} devices failed "
                       f"({decided} decided; the limit is {limit:.0%})")
            return []
        return self._fill()

    def _halt(self, reason: str) -> None:
        self._stage = RolloutStage.HALTED
        self._halted_reason = reason
        self._queue.clear()

    def _fill(self) -> list[str]:
        """Offer from the current stage's queue; move to the next stage when this one is decided."""
        offer: list[str] = []
        while True:
            while self._queue and len(self._pending) < self._policy.parallel:
                device = self._queue.pop()
                self._pending.add(device)
                self._offered.add(device)
                offer.append(device)
            if self._queue or self._pending:
                return offer
            # The stage is decided (and within the threshold, or it would have halted).
            if self._stage is RolloutStage.CANARY and self._rest:
                self._stage = RolloutStage.REST
                self._queue = list(reversed(self._rest))
                continue
            self._stage = RolloutStage.DONE
            return offer

    def summary(self) -> dict[str, Any]:
        """A JSON-able account: stage, counts per outcome, who is pending and who was never offered."""
        counts = {o.value: sum(1 for r in self._results.values() if r is o) for o in Outcome}
        return {
            "stage": self._stage.value,
            "devices": len(self._canary) + len(self._rest),
            "canary": list(self._canary),
            **counts,
            "pending": sorted(self._pending),
            "not_offered": [d for d in (*self._canary, *self._rest) if d not in self._offered],
            "results": {d: o.value for d, o in self._results.items()},
            "halted_reason": self._halted_reason,
        }
