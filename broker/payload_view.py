"""Render a received payload for a person or a script: envelopes as JSON, the rest as is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.envelope import MAGIC
from schemas.errors import CodecError
from schemas.messages import DEFAULT_CODEC, record_to_json
from schemas.record_base import TYPE_KEY, record_from_body

__all__ = ["PayloadView", "view_payload"]


@dataclass(frozen=True, slots=True)
class PayloadView:
    """What a payload is and how to show it.

    ``kind`` is ``envelope`` (decoded record), ``text`` (UTF-8), ``binary``
    (anything else) or ``invalid`` (an envelope that failed to decode; ``error``
    says why).
    """

    kind: str
    value: Any
    error: str = ""

    def as_line(self) -> bytes:
        """One output line, like mosquitto_sub would print it, envelopes as compact JSON."""
        if self.kind == "envelope":
            return json.dumps(self.value, separators=(",", ":"), default=str).encode()
        if self.kind == "text":
            return str(self.value).encode()
        if self.kind == "invalid":
            return f"<undecodable envelope: {self.error}>".encode()
        return bytes(self.value)

    def as_json(self) -> Any:
        """A JSON-able value: the record, the text, or hex for binary payloads."""
        if self.kind == "binary":
            return {"hex": bytes(self.value).hex()}
        if self.kind == "invalid":
            return {"error": self.error, "hex": bytes(self.value).hex()}
        return self.value


def view_payload(payload: bytes) -> PayloadView:
    """Decode an edgebus envelope; leave any other payload as it is."""
    if payload[: len(MAGIC)] == MAGIC:
        try:
            body = DEFAULT_CODEC.decode(payload)
        except CodecError as exc:
            return PayloadView("invalid", payload, str(exc))
        if not (isinstance(body, dict) and TYPE_KEY in body):
            # A plain envelope (``edge-bus pub --envelope``): show its body as it is.
            return PayloadView("envelope", body)
        try:
            return PayloadView("envelope", record_to_json(record_from_body(body)))
        except CodecError as exc:
            return PayloadView("invalid", payload, str(exc))
    try:
        return PayloadView("text", payload.decode("utf-8"))
    except UnicodeDecodeError:
        return PayloadView("binary", payload)
