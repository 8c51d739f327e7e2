"""The simulated network's fault model: loss, duplication, variable delay and partitions."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.sim.prng import SplitMix64


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """Delays in virtual milliseconds; a ``spike`` delay reorders a message behind later ones."""

    min_delay: int = 1
    max_delay: int = 10
    spike_chance: float = 0.02
    spike_delay: int = 150
    loss: float = 0.03
    duplicate: float = 0.02


CALM = NetworkProfile(loss=0.0, duplicate=0.0, spike_chance=0.0)


class Network:
    """Decides, per message, whether and when (possibly twice) it arrives."""

    def __init__(self, rng: SplitMix64, profile: NetworkProfile) -> None:
        self._rng = rng
        self.profile = profile
        self._group: dict[str, int] = {}

    def partition(self, groups: list[list[str]]) -> None:
        """Nodes in different groups cannot talk; nodes not named stay in group 0 (with the first)."""
        self._group = {n: g for g, members in enumerate(groups) for n in members}

    def heal(self) -> None:
        self._group = {}

    def connected(self, a: str, b: str) -> bool:
        return self._group.get(a, 0) == self._group.get(b, 0)

    def delays(self, src: str, dst: str) -> list[int]:
        """Delivery delays for one message: [] lost, one value normally, two when duplicated."""
        if not self.connected(src, dst) or self._rng.chance(self.profile.loss):
            return []
        copies = 2 if self._rng.chance(self.profile.duplicate) else 1
        return [self._delay() for _ in range(copies)]

    def _delay(self) -> int:
        p = self.profile
        d = self._rng.between(p.min_delay, p.max_delay)
        if self._rng.chance(p.spike_chance):
            d += self._rng.between(1, p.spike_delay)
        return d
