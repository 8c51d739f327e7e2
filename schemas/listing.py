"""Lists in messages, bounded: a refusal names a few items and how many there were, never all of them.

A hostile payload can carry 40,000 keys; the answer naming them must not be
40,000 names long.

>>> few(["a", "b"])
'a, b'
>>> few([str(i) for i in range(40_000)], "keys", first=3)
'40000 keys, first 3: 0, 1, 2'
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["FEW", "few"]

#: How many items a bounded list names.
FEW = 5


def few(items: Collection[object], what: str = "items", *, first: int = FEW, max_chars: int = 64) -> str:
    """``items`` joined by commas when there are at most ``first``, else their count and the first few;
    each item cut to ``max_chars`` characters."""
    shown = [str(item)[:max_chars] for _, item in zip(range(first), items, strict=False)]
    if len(items) <= first:
        return ", ".join(shown)
    return f"{len(items)} {what}, first {first}: {', '.join(shown)}"
