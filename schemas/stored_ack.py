"""The coordinator's end-to-end acknowledgement: which of a device's samples are in the store.

A broker's PUBACK only says the broker has a message; a broker killed before it
saved its store loses it (issue 17, break 8). So the coordinator publishes,
after each store commit, which sequence numbers of each of a device's streams
are committed, retained and at QoS 1 on ``{root}/{device}/cmd/stored`` (a topic
only that device and the coordinators may read; only coordinators, and the
device itself, may write it). The agent keeps every sequenced batch in its
outbox until an acknowledgement covers it, and re-sends what stays uncovered.

The payload is one JSON object::

    {"v": 1, "streams": {"metrics": {"epoch": 1764000000000, "stored": [[0, 1200]]},
                         "detections/door": {"epoch": 1764000000000, "stored": [[0, 40], [45, 90]]}}}

``streams`` maps a stream (``metrics``, or ``detections/{camera}``: the topic
leaf the batches travel on) to its current ``epoch`` and the half-open ranges
``[first, end)`` of sequence numbers of that epoch that are stored, sorted and
disjoint; at most :data:`MAX_RANGES` per stream (the newest). Unknown keys are
ignored (kept for a later version); another ``v`` is refused.

>>> ack = StoredAck({"metrics": StreamAck(7, ((0, 10), (15, 20)))})
>>> StoredAck.decode(ack.encode()) == ack
True
>>> ack.covers("metrics", 7, 2, 8), ack.covers("metrics", 7, 8, 4), ack.covers("metrics", 6, 0, 1)
(True, False, True)
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.errors import CodecError, UnsupportedVersion
from schemas.json_object import json_object
from schemas.topics import validate_name

__all__ = ["MAX_RANGES", "MAX_STREAMS", "STORED_ACK_VERSION", "METRICS_STREAM", "StoredAck", "StreamAck",
           "detections_stream"]

STORED_ACK_VERSION = 1
#: Ranges per stream in one acknowledgement at most (the newest are kept).
MAX_RANGES = 64
#: Streams per device in one acknowledgement at most.
MAX_STREAMS = 256
#: Largest acknowledgement accepted, in bytes.
MAX_BYTES = 64 * 1024
#: The stream name of a device's metrics batches.
METRICS_STREAM = "metrics"


def detections_stream(camera: str) -> str:
    """The stream name of one camera's detection batches."""
    return f"detections/{validate_name(camera, 'camera')}"


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise CodecError(f"stored ack: {what} must be a non-negative integer, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StreamAck:
    """One stream's stored ranges within its current epoch."""

    epoch: int
    stored: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _int(self.epoch, "epoch")
        previous_end = -1
        for first, end in self.stored:
            _int(first, "range start")
            _int(end, "range end")
            if end <= first or first <= previous_end:
                raise CodecError(f"stored ack: ranges must be sorted, disjoint and non-empty; "
                                 f"[{first}, {end}) follows end {previous_end}")
            previous_end = end
        if len(self.stored) > MAX_RANGES:
            raise CodecError(f"stored ack: {len(self.stored)} ranges; at most {MAX_RANGES}")

    @classmethod
    def newest(cls, epoch: int, ranges: Sequence[Sequence[int]]) -> StreamAck:
        """From a receiver's ranges (sorted, disjoint): the newest :data:`MAX_RANGES` of them."""
        return cls(epoch, tuple((int(lo), int(hi)) for lo, hi in ranges[-MAX_RANGES:]))

    def covers(self, epoch: int, first: int, count: int) -> bool:
        """Whether ``count`` numbers from ``first`` of ``epoch`` need no sending again.

        True when they are stored, and for an older epoch (the receiver moved on
        and takes nothing of it any more).
        """
        if epoch < self.epoch:
            return True
        if epoch > self.epoch:
            return False
        i = bisect.bisect_right(self.stored, (first, float("inf"))) - 1
        return i >= 0 and self.stored[i][0] <= first and first + count <= self.stored[i][1]


@dataclass(frozen=True, slots=True)
class StoredAck:
    """A device's stored ranges per stream (see the module docstring)."""

    streams: Mapping[str, StreamAck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.streams) > MAX_STREAMS:
            raise CodecError(f"stored ack: {len(self.streams)} streams; at most {MAX_STREAMS}")
        object.__setattr__(self, "streams", MappingProxyType(dict(self.streams)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredAck) and dict(self.streams) == dict(other.streams)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.streams.items())))

    def covers(self, stream: str, epoch: int, first: int, count: int) -> bool:
        """Whether the batch ``stream``/``epoch``/``first``..+``count`` needs no sending again."""
        ack = self.streams.get(stream)
        return ack is not None and ack.covers(epoch, first, count)

    def encode(self) -> bytes:
        body = {"v": STORED_ACK_VERSION,
                "streams": {name: {"epoch": s.epoch, "stored": [list(r) for r in s.stored]}
                            for name, s in sorted(self.streams.items())}}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> StoredAck:
        """Read an acknowledgement; :class:`CodecError` for anything malformed."""
        if len(payload) > MAX_BYTES:
            raise CodecError(f"stored ack is {len(payload)} bytes; at most {MAX_BYTES}")
        body = json_object(payload, "stored ack")
        if body.get("v") != STORED_ACK_VERSION:
            raise UnsupportedVersion(f"stored ack version {body.get('v')!r}; this build reads "
                                     f"{STORED_ACK_VERSION}")
        streams = body.get("streams")
        if not isinstance(streams, dict):
            raise CodecError("stored ack: 'streams' must be an object")
        if len(streams) > MAX_STREAMS:
            raise CodecError(f"stored ack: {len(streams)} streams; at most {MAX_STREAMS}")
        out: dict[str, StreamAck] = {}
        for name, value in streams.items():
            if not isinstance(value, dict) or not isinstance(value.get("stored"), list):
                raise CodecError(f"stored ack: stream {name!r} needs 'epoch' and a 'stored' list")
            ranges = value["stored"]
            if len(ranges) > MAX_RANGES:
                raise CodecError(f"stored ack: {len(ranges)} ranges; at most {MAX_RANGES}")
            if not all(isinstance(r, list) and len(r) == 2 for r in ranges):
                raise CodecError(f"stored ack: stream {name!r}: each range is [first, end]")
            stored = tuple((_int(lo, "range start"), _int(hi, "range end")) for lo, hi in ranges)
            out[name] = StreamAck(_int(value.get("epoch"), "epoch"), stored)
        return cls(out)
