"""Moments written by people: epoch milliseconds or ISO 8601, as the API and the CLI accept them.

>>> parse_time_ms("1765000000000")
1765000000000
>>> parse_time_ms("2026-01-01T00:00:00Z")
1767225600000
>>> parse_time_ms("2026-01-01")  # no offset: UTC
1767225600000
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["MAX_MS", "parse_time_ms"]

#: Later than this (about the year 2286) is refused, as is anything before 1970.
MAX_MS = 10_000_000_000_000
_EPOCH_MS = re.compile(r"^-?\d{1,16}$")


def parse_time_ms(text: str) -> int:
    """``text`` as epoch milliseconds; ValueError saying why when it is neither form or out of range."""
    text = text.strip()
    if _EPOCH_MS.match(text):
        ms = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValueError(f"{text!r} is neither epoch milliseconds nor ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            ms = int(moment.timestamp() * 1000)
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"{text!r} is out of range") from None
    if not 0 <= ms < MAX_MS:
        raise ValueError(f"{text!r} is out of range")
    return ms
