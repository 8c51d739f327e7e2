"""The one reader of the plain-JSON records on the bus (audit, stored acks, camera health, track events).

Those records are JSON objects so that any MQTT client can read them; each
decoder checks its own size, version and fields after this common first step.

>>> json_object(b'{"a": 1}', "example")
{'a': 1}
>>> json_object(b'[1]', "example")
Traceback (most recent call last):
...
schemas.errors.CodecError: example must be a JSON object
"""

from __future__ import annotations

import json
from typing import Any

from schemas.errors import CodecError

__all__ = ["json_object"]


def json_object(payload: bytes | str, what: str) -> dict[str, Any]:
    """``payload`` parsed as a JSON object; CodecError naming ``what`` for anything else."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CodecError(f"{what} must be a JSON object")
    return doc
