"""The API's query conventions: time ranges, page sizes and cursors, checked into 4xx errors.

* Times (``since``, ``until``) are epoch milliseconds (``1765000000000``) or
  ISO 8601 (``2026-12-06T10:00:00Z``; without an offset, UTC). Ranges are
  half-open, ``[since, until)``.
* Lists are newest first, ``limit`` items a page (1..1000), and a
  ``next_cursor`` in the body when there is more: pass it back as ``cursor``.
  A cursor is opaque (base64 of the last item's key).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Query

from coordinator.http.errors import ApiError
from coordinator.time_text import parse_time_ms

__all__ = ["MAX_LIMIT", "Cursor", "Limit", "TimeParam", "decode_cursor", "encode_cursor", "parse_time",
           "time_range"]

MAX_LIMIT = 1000

TIME_DESCRIPTION = "epoch milliseconds or ISO 8601 (UTC when no offset is given)"
TIME_PATTERN = r"^(\d{1,14}|\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?)$"

TimeParam = Annotated[str | None, Query(description=TIME_DESCRIPTION, pattern=TIME_PATTERN, max_length=40)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (1..{MAX_LIMIT})")]
Cursor = Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page")]


def parse_time(value: str | None, field: str) -> int | None:
    """``value`` as epoch ms; an :class:`ApiError` 400 naming ``field`` when it is neither form."""
    if value is None or value == "":
        return None
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise ApiError(400, "bad_time", f"{field}: {exc} (give epoch milliseconds or ISO 8601)",
                       field) from None


def time_range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """Both ends parsed; ``since`` must come before ``until``."""
    low, high = parse_time(since, "since"), parse_time(until, "until")
    if low is not None and high is not None and low >= high:
        raise ApiError(400, "bad_range", "since must be before until", "since")
    return low, high


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: str) -> Any:
    """The key a cursor carries, checked against ``shape``: ``"int"``, ``"text"`` or ``"detection"``."""
    if cursor is None or cursor == "":
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "cursor is not one this API gave out", "cursor") from None
    if shape == "int" and type(key) is int and 0 <= key < 2**63:
        return key
    if shape == "text" and isinstance(key, str) and len(key) <= 200:
        return key
    if (shape == "detection" and isinstance(key, list) and len(key) == 5 and isinstance(key[1], str)
            and all(type(v) is int and abs(v) < 2**63 for v in (key[0], key[2], key[3], key[4]))):
        return (key[0], key[1], key[2], key[3], key[4])
    raise ApiError(400, "bad_cursor", "cursor is not one this API gave out", "cursor")
