"""The ``[ingest]`` table: what one message, and one device, may cost the coordinator.

Every limit has a default that a real fleet never reaches and a hostile or
broken device reaches at once; a message over any of them becomes a dead
letter with the limit's reason and a counter, and ingest goes on. Keys
(all optional)::

    [ingest]
    max_payload_bytes = 262144      # an envelope on the wire
    max_body_bytes = 4194304        # its msgpack body after decompression
    max_objects = 200000            # decoded msgpack objects in one body
    max_samples = 10000             # metric samples, or detection frames, in one message
    max_detections = 20000          # detections in one message (all its frames)
    max_names = 512                 # metric names in one message's name table
    max_device_names = 1024         # distinct metric names of one device (since the coordinator started)
    max_name_chars = 128            # a metric name (the topic rules allow up to 128)
    max_device_cameras = 64         # detection and event streams of one device
    max_devices = 10000             # devices the coordinator keeps state for
    max_time_span_ms = 3600000      # between the earliest and the latest sample of one message
    max_future_ms = 86400000        # a sample's time or an epoch ahead of the coordinator's clock
    max_seq_gap = 10000000          # a batch's first sequence number past the highest seen
    device_messages_per_s = 200     # sustained messages per device; more are refused (rate_limited)
    device_samples_per_s = 20000    # sustained samples (or frames) per device
    burst_s = 10                    # how many seconds of each rate a device may send at once
    dead_letter_payload_bytes = 4096  # payload kept with a dead letter (its length and SHA-256 always)

The sequence epoch of the agents is the clock (milliseconds) when their
outbox was made, so an epoch far ahead of the coordinator's clock is not one
a device could have; ``max_future_ms`` bounds both that and sample times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from broker.config_values import check_section_keys, float_option, int_option, section_table
from schemas.envelope import MAX_OBJECTS, EnvelopeCodec
from schemas.errors import ConfigError
from schemas.sequence import SequenceLimits
from schemas.topics import NAME_MAX_CHARS

__all__ = ["IngestLimits"]

SECTION = "ingest"


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Budgets of ingest (see the module docstring); :meth:`from_mapping` checks an ``[ingest]`` table."""

    max_payload_bytes: int = 256 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_objects: int = MAX_OBJECTS
    max_samples: int = 10_000
    max_detections: int = 20_000
    max_names: int = 512
    max_device_names: int = 1_024
    max_name_chars: int = NAME_MAX_CHARS
    max_device_cameras: int = 64
    max_devices: int = 10_000
    max_time_span_ms: int = 3_600_000
    max_future_ms: int = 86_400_000
    max_seq_gap: int = 10_000_000
    device_messages_per_s: float = 200.0
    device_samples_per_s: float = 20_000.0
    burst_s: float = 10.0
    dead_letter_payload_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.max_name_chars > NAME_MAX_CHARS:
            raise ConfigError(f"{SECTION}.max_name_chars must be at most {NAME_MAX_CHARS} (the topic "
                              f"rules), not {self.max_name_chars}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
                    or not math.isfinite(value):
                raise ConfigError(f"{SECTION}.{f.name} must be a positive number, not {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> IngestLimits:
        table = section_table(SECTION, data)
        defaults = cls()
        names = [f.name for f in fields(cls)]
        check_section_keys(SECTION, table, names)
        values: dict[str, Any] = {}
        for name in names:
            default = getattr(defaults, name)
            if isinstance(default, float):
                values[name] = float_option(SECTION, table, name, default, low=0.0, high=1e12, low_open=True)
            else:
                values[name] = int_option(SECTION, table, name, default, low=1, high=2**62)
        return cls(**values)

    def codec(self) -> EnvelopeCodec:
        """The envelope codec with these byte and object limits."""
        try:
            return EnvelopeCodec(max_payload_bytes=self.max_payload_bytes, max_body_bytes=self.max_body_bytes,
                                 max_objects=self.max_objects)
        except ConfigError as exc:
            raise ConfigError(f"{SECTION}: {exc}") from exc

    def sequence(self) -> SequenceLimits:
        """The limits of the sequence accounting (epochs and sequence numbers)."""
        return SequenceLimits(max_future_ms=self.max_future_ms, max_seq_gap=self.max_seq_gap)
