"""Rendezvous (highest-random-weight) hashing: one owner per device, given the live members.

Every member computes the same answer from the same member set, with no
coordination beyond agreeing who is alive: a device goes to the member whose
hash of ``(member, device)`` is highest. When a member joins, the only devices
that move are the ones whose highest hash is now the newcomer's (about 1/n of
them, all to the newcomer); when one leaves, only its own devices move, each to
its second choice. A consistent-hash ring gives the same with virtual nodes to
even out; rendezvous needs none and is exact, at O(members) per look-up, which
is nothing for a handful of coordinators.

The hash is BLAKE2b (stable across processes and Python versions, unlike
``hash()``), so the assignment is a pure function of its inputs.

>>> owner("cam-1", ["c1", "c2", "c3"]) == owner("cam-1", ["c3", "c1", "c2"])
True
>>> owner("cam-1", [])
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

__all__ = ["assign", "owner", "weight"]


def weight(member: str, device: str) -> int:
    """The device's weight at ``member`` (64 bits); the highest weight owns it."""
    digest = hashlib.blake2b(f"{len(member)}:{member}/{device}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(device: str, members: Iterable[str]) -> str | None:
    """The member that owns ``device`` (None when there is no member); ties go to the smaller name."""
    best: tuple[int, str] | None = None
    for member in members:
        key = (weight(member, device), member)
        if best is None or key[0] > best[0] or (key[0] == best[0] and member < best[1]):
            best = key
    return None if best is None else best[1]


def assign(devices: Iterable[str], members: Iterable[str]) -> Mapping[str, frozenset[str]]:
    """Each member's devices (every member present, perhaps with none); empty without members."""
    live = sorted(set(members))
    out: dict[str, set[str]] = {m: set() for m in live}
    for device in devices:
        chosen = owner(device, live)
        if chosen is not None:
            out[chosen].add(device)
    return {m: frozenset(d) for m, d in out.items()}
