"""The single entry points for records on the wire: encode, decode, and show.

>>> batch = MetricsBatch(device="gw-1", epoch=1, first_seq=0,
...                      samples=[MetricSample(1_700_000_000_000, "temp_c", 48.3)])
>>> decode_record(encode_record(batch)) == batch
True
>>> record_to_json(batch)["samples"]
[{'seq': 0, 'time_ms': 1700000000000, 'name': 'temp_c', 'value': 48.3}]
"""

from __future__ import annotations

from typing import Any

from schemas.birth import Birth
from schemas.command import Command
from schemas.detections import Box, Detection, DetectionsBatch, FrameDetections
from schemas.envelope import EnvelopeCodec, Payload, pack_body
from schemas.errors import CodecError
from schemas.metrics import MetricSample, MetricsBatch
from schemas.record_base import Record, record_from_body, record_to_body, registered_types

__all__ = [
    "DEFAULT_CODEC",
    "Birth",
    "Box",
    "Command",
    "Detection",
    "DetectionsBatch",
    "FrameDetections",
    "MetricSample",
    "MetricsBatch",
    "Record",
    "decode_record",
    "encode_record",
    "record_body_bytes",
    "record_to_json",
    "registered_types",
]

# Shared by every caller that does not configure its own limits; safe across threads.
DEFAULT_CODEC = EnvelopeCodec()


def encode_record(record: Record, codec: EnvelopeCodec = DEFAULT_CODEC) -> bytes:
    """``record`` as an envelope, ready to publish."""
    if not isinstance(record, Record):
        raise CodecError(f"encode_record needs a Record, not {type(record).__name__}")
    return codec.encode(record_to_body(record))


def decode_record(data: Payload, codec: EnvelopeCodec = DEFAULT_CODEC) -> Record:
    """The record in envelope ``data``.

    Raises :class:`CodecError` for anything malformed,
    :class:`UnsupportedVersion` (a subclass) for an unknown record type or a
    newer record version, and :class:`PayloadTooLarge` over the codec's limits.
    """
    return record_from_body(codec.decode(data))


def record_body_bytes(record: Record) -> bytes:
    """``record``'s uncompressed msgpack body (for dictionary training and benchmarks)."""
    return pack_body(record_to_body(record))


def record_to_json(record: Record) -> dict[str, Any]:
    """A readable JSON-able view of ``record`` for people and scripts (``edge-bus sub``).

    Metric and label names in full, one entry per sample or frame with its
    sequence number, times as plain integer milliseconds.
    """
    return record.to_json()
