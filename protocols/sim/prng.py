"""SplitMix64: a tiny seeded PRNG, so that a simulated run replays exactly from its seed.

Pure Python and independent of the interpreter's ``random`` (which the pure
layers may not import); good enough statistically for scheduling faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
_MASK = (1 << 64) - 1


class SplitMix64:
    """Deterministic stream of 64-bit values from one seed; satisfies ``RandomSource``."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform in ``[0, n)`` (modulo bias is negligible for small n)."""
        if n <= 0:
            raise ValueError("below() needs n >= 1")
        return self.next_u64() % n

    def between(self, lo: int, hi: int) -> int:
        """Uniform in ``[lo, hi]``."""
        return lo + self.below(hi - lo + 1)

    def chance(self, p: float) -> bool:
        return self.next_u64() < int(p * (1 << 64))

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out

    def fork(self) -> SplitMix64:
        """An independent stream, so adding draws in one component does not shift another's."""
        return SplitMix64(self.next_u64())
