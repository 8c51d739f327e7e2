"""Over-the-air update messages: the signed manifest, chunk frames, chunk requests, progress.

The server offers an update as a signed :class:`UpdateManifest` (the ``ota``
command's args, :meth:`SignedManifest.to_offer`); the device pulls the artifact
chunk by chunk, asking on ``{root}/{device}/ota/want`` with a :class:`ChunkRequest`
and receiving raw msgpack chunk frames (:func:`encode_chunk`) on
``cmd/ota/chunk``; it reports on the retained ``state/ota`` with
:class:`OtaProgress`. Every chunk has its own digest in the manifest, so a
device never keeps a corrupt chunk and resumes an interrupted download from
what it holds.

The JSON documents carry ``"format": OTA_FORMAT``. A newer format is refused
with :class:`UnsupportedVersion` (a reader would misread it); unknown keys are
kept in ``extra`` (manifest, progress) so a newer sender's additions survive.
The manifest's canonical bytes (:meth:`UpdateManifest.to_bytes`) are what is
signed, so they must be the same on every machine: sorted keys, no spaces.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from schemas.errors import CodecError, UnsupportedVersion
from schemas.record_base import _short, check_int, check_name, check_text, check_tuple, empty_map, freeze_map

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_ARTIFACT_BYTES",
    "MAX_CHUNK_INDEX",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "OTA_FORMAT",
    "TERMINAL_PHASES",
    "UPDATE_KINDS",
    "ChunkRequest",
    "OtaProgress",
    "Phase",
    "SignedManifest",
    "UpdateManifest",
    "decode_chunk",
    "encode_chunk",
]

OTA_FORMAT = 1
UPDATE_KINDS = ("agent", "model", "keys")
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 1024 * 1024
MAX_ARTIFACT_BYTES = 2 * 1024**3
#: No artifact has more chunks than this, so no valid index is larger.
MAX_CHUNK_INDEX = MAX_ARTIFACT_BYTES // MIN_CHUNK_SIZE
SIGNATURE_BYTES = 64
# Free text in progress reports (install errors) may span lines; bound it.
_DETAIL_MAX_CHARS = 4096

_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- shared checks ----------------------------------------------------------------------


def _check_digest(where: str, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise CodecError(f"{where} must be 64 lowercase hex digits (SHA-256), not {_short(value)}")
    return value


def _thaw(value: Any) -> Any:
    """A frozen value back as plain JSON types (tuples as lists, mappings as dicts)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _json_map(where: str, value: object, reserved: Iterable[str] = ()) -> Mapping[str, Any]:
    """A read-only mapping that is sure to encode as JSON (no bytes, no NaN)."""
    frozen = freeze_map(where, value, reserved)
    try:
        json.dumps(_thaw(frozen), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{where} is not JSON-encodable: {exc}") from None
    return frozen


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(_thaw(doc), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _load_doc(data: bytes, what: str, upgrade: str) -> dict[str, Any]:
    """The JSON object in ``data`` after the format check."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{what} must be bytes, not {_short(data)}")
    try:
        doc = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CodecError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CodecError(f"{what} must be a JSON object, not {type(doc).__name__}")
    fmt = doc.get("format")
    if type(fmt) is not int or fmt < 1:
        raise CodecError(f"{what}: 'format' must be an integer >= 1, not {_short(fmt)}")
    if fmt > OTA_FORMAT:
        raise UnsupportedVersion(f"{what} format {fmt} is newer than this edgebus understands "
                                 f"(max {OTA_FORMAT}); upgrade {upgrade}")
    return doc


def _need(doc: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return doc[key]
    except KeyError:
        raise CodecError(f"{what}: key {key!r} is missing") from None


def _check_created(where: str, value: object) -> str:
    text = check_text(where, value, max_chars=64)
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CodecError(f"{where} {text!r} is not an ISO-8601 time") from None
    if stamp.utcoffset() != datetime.timedelta(0):
        raise CodecError(f"{where} {text!r} must be in UTC (end in 'Z' or '+00:00')")
    return text


def _check_requires(where: str, value: object) -> Mapping[str, Any]:
    requires = _json_map(where, value)
    caps = requires.get("capabilities")
    if caps is not None:
        check_tuple(f"{where}['capabilities']", caps, lambda w, x: check_text(w, x, max_chars=128))
    for key in ("target", "python"):
        if requires.get(key) is not None:
            check_text(f"{where}[{key!r}]", requires[key], max_chars=128)
    return requires


# -- the manifest -----------------------------------------------------------------------

_MANIFEST_KEYS = frozenset({"format", "update_id", "kind", "name", "version", "size", "sha256",
                            "chunk_size", "chunk_sha256", "created", "requires", "health_window_s"})


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateManifest:
    """What an update is: the artifact's size and digests, what it needs, how to judge it.

    ``requires`` may hold ``capabilities`` (a list the device's birth must
    include), ``target`` (``platform.machine()``) and ``python`` (a version
    prefix); other keys are kept for newer agents.
    """

    update_id: str
    kind: str
    name: str
    version: str
    size: int
    sha256: str
    chunk_size: int
    chunk_sha256: tuple[str, ...]
    created: str
    requires: Mapping[str, Any] = field(default_factory=empty_map, hash=False)
    health_window_s: float = 60.0
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_name("update manifest update_id", self.update_id)
        if self.kind not in UPDATE_KINDS:
            raise CodecError(f"update manifest kind must be one of {', '.join(UPDATE_KINDS)}, "
                             f"not {_short(self.kind)}")
        check_name("update manifest name", self.name)
        check_text("update manifest version", self.version, max_chars=128)
        object.__setattr__(self, "size", check_int("update manifest size", self.size, 1,
                                                   MAX_ARTIFACT_BYTES))
        _check_digest("update manifest sha256", self.sha256)
        object.__setattr__(self, "chunk_size", check_int("update manifest chunk_size", self.chunk_size,
                                                         MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
        digests = check_tuple("update manifest chunk_sha256", self.chunk_sha256, _check_digest)
        expected = -(-self.size // self.chunk_size)
        if len(digests) != expected:
            raise CodecError(f"update manifest chunk_sha256 has {len(digests)} digests; {self.size} "
                             f"bytes in chunks of {self.chunk_size} need {expected}")
        object.__setattr__(self, "chunk_sha256", digests)
        _check_created("update manifest created", self.created)
        object.__setattr__(self, "requires", _check_requires("update manifest requires", self.requires))
        window = self.health_window_s
        if (not isinstance(window, int | float) or isinstance(window, bool) or not math.isfinite(window)
                or window <= 0):
            raise CodecError(f"update manifest health_window_s must be a positive number of seconds, "
                             f"not {_short(window)}")
        object.__setattr__(self, "health_window_s", float(window))
        object.__setattr__(self, "extra", _json_map("update manifest extra", self.extra, _MANIFEST_KEYS))

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_sha256)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """``(offset, length)`` of chunk ``index`` in the artifact; the last one may be short."""
        if type(index) is not int or not 0 <= index < self.chunk_count:
            raise IndexError(f"chunk index {index!r} out of range (the update has {self.chunk_count})")
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)

    def to_doc(self) -> dict[str, Any]:
        """The JSON object (extra keys included)."""
        doc: dict[str, Any] = dict(self.extra)
        doc.update({"format": OTA_FORMAT, "update_id": self.update_id, "kind": self.kind,
                    "name": self.name, "version": self.version, "size": self.size, "sha256": self.sha256,
                    "chunk_size": self.chunk_size, "chunk_sha256": list(self.chunk_sha256),
                    "created": self.created, "requires": self.requires,
                    "health_window_s": self.health_window_s})
        return doc

    def to_bytes(self) -> bytes:
        """The canonical JSON that is signed: sorted keys, no whitespace."""
        return _dumps(self.to_doc())

    @classmethod
    def from_bytes(cls, data: bytes) -> UpdateManifest:
        what = "update manifest"
        doc = _load_doc(data, what, "the agent")
        extra = {k: v for k, v in doc.items() if k not in _MANIFEST_KEYS}
        return cls(update_id=_need(doc, "update_id", what), kind=_need(doc, "kind", what),
                   name=_need(doc, "name", what), version=_need(doc, "version", what),
                   size=_need(doc, "size", what), sha256=_need(doc, "sha256", what),
                   chunk_size=_need(doc, "chunk_size", what),
                   chunk_sha256=_need(doc, "chunk_sha256", what), created=_need(doc, "created", what),
                   requires=doc.get("requires") or {}, health_window_s=doc.get("health_window_s", 60.0),
                   extra=extra)

    @classmethod
    def for_artifact(cls, data: bytes, *, update_id: str, kind: str, name: str, version: str,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, created: str,
                     requires: Mapping[str, Any] | None = None,
                     health_window_s: float = 60.0) -> UpdateManifest:
        """The manifest of artifact ``data`` (digests computed here)."""
        chunk_size = check_int("update manifest chunk_size", chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        view = memoryview(data)
        digests = tuple(hashlib.sha256(view[i:i + chunk_size]).hexdigest()
                        for i in range(0, len(view), chunk_size))
        return cls(update_id=update_id, kind=kind, name=name, version=version, size=len(view),
                   sha256=hashlib.sha256(view).hexdigest(), chunk_size=chunk_size, chunk_sha256=digests,
                   created=created, requires=requires or {}, health_window_s=health_window_s)


def _as_bytes(where: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise CodecError(f"{where} must be bytes, not {_short(value)}")


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest's exact bytes with the Ed25519 signature over them.

    The bytes are kept as received (not re-encoded) because they are what was
    signed; :attr:`manifest` is parsed from them once, on construction.
    """

    manifest_bytes: bytes
    key_id: str
    signature: bytes
    _manifest: UpdateManifest = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest_bytes", _as_bytes("ota offer manifest", self.manifest_bytes))
        check_text("ota offer key_id", self.key_id, max_chars=128)
        signature = _as_bytes("ota offer signature", self.signature)
        if len(signature) != SIGNATURE_BYTES:
            raise CodecError(f"ota offer signature is {len(signature)} bytes; Ed25519 signatures are "
                             f"{SIGNATURE_BYTES}")
        object.__setattr__(self, "signature", signature)
        object.__setattr__(self, "_manifest", UpdateManifest.from_bytes(self.manifest_bytes))

    @property
    def manifest(self) -> UpdateManifest:
        return self._manifest

    def to_offer(self, *, rollout: str | None = None) -> dict[str, Any]:
        """The ``ota`` command's args."""
        return {"manifest": self.manifest_bytes, "key_id": self.key_id, "signature": self.signature,
                "rollout": rollout}

    @classmethod
    def from_offer(cls, args: Mapping[str, Any]) -> SignedManifest:
        """The offer in an ``ota`` command's args (``rollout`` is the caller's to read)."""
        if not isinstance(args, Mapping):
            raise CodecError(f"ota offer args must be a map, not {_short(args)}")
        for key in ("manifest", "key_id", "signature"):
            if key not in args:
                raise CodecError(f"ota offer arg {key!r} is missing")
        return cls(args["manifest"], args["key_id"], args["signature"])


# -- chunk frames -----------------------------------------------------------------------


def encode_chunk(update_id: str, index: int, data: bytes) -> bytes:
    """The raw frame on ``cmd/ota/chunk``: msgpack ``[OTA_FORMAT, update_id, index, data]``."""
    check_name("ota chunk update_id", update_id)
    check_int("ota chunk index", index, 0, MAX_CHUNK_INDEX)
    payload = _as_bytes("ota chunk data", data)
    frame: bytes = msgpack.packb([OTA_FORMAT, update_id, index, payload], use_bin_type=True)
    return frame


def decode_chunk(payload: bytes) -> tuple[str, int, bytes]:
    """``(update_id, index, data)`` of a chunk frame; trailing array items are ignored."""
    try:
        frame = msgpack.unpackb(_as_bytes("ota chunk frame", payload), raw=False, use_list=True)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise CodecError(f"ota chunk frame is not msgpack: {exc}") from None
    if not isinstance(frame, list) or not frame:
        raise CodecError(f"ota chunk frame must be a msgpack array, not {_short(frame)}")
    fmt = frame[0]
    if type(fmt) is not int or fmt < 1:
        raise CodecError(f"ota chunk frame format must be an integer >= 1, not {_short(fmt)}")
    if fmt > OTA_FORMAT:
        raise UnsupportedVersion(f"ota chunk frame format {fmt} is newer than this edgebus understands "
                                 f"(max {OTA_FORMAT}); upgrade the agent")
    if len(frame) < 4:
        raise CodecError(f"ota chunk frame has {len(frame)} items; expected [format, update_id, index, data]")
    update_id = check_name("ota chunk update_id", frame[1])
    index = check_int("ota chunk index", frame[2], 0, MAX_CHUNK_INDEX)
    data = frame[3]
    if not isinstance(data, bytes):
        raise CodecError(f"ota chunk data must be msgpack bin, not {_short(data)}")
    return update_id, index, data


# -- chunk requests ---------------------------------------------------------------------


def _check_ranges(where: str, value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list | tuple) or not value:
        raise CodecError(f"{where} must be a non-empty list of [start, end) pairs, not {_short(value)}")
    ranges: list[tuple[int, int]] = []
    previous_end = 0
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise CodecError(f"{where}[{i}] must be a [start, end) pair, not {_short(pair)}")
        start = check_int(f"{where}[{i}] start", pair[0], 0, MAX_CHUNK_INDEX)
        end = check_int(f"{where}[{i}] end", pair[1], 0, MAX_CHUNK_INDEX + 1)
        if start >= end:
            raise CodecError(f"{where}[{i}] [{start}, {end}) is empty")
        if start < previous_end:
            raise CodecError(f"{where}[{i}] [{start}, {end}) overlaps or precedes the range before it")
        ranges.append((start, end))
        previous_end = end
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """A device asking for chunks: half-open ``[start, end)`` index ranges, sorted, disjoint."""

    update_id: str
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        check_name("ota chunk request update_id", self.update_id)
        object.__setattr__(self, "ranges", _check_ranges("ota chunk request ranges", self.ranges))

    def to_json_bytes(self) -> bytes:
        return _dumps({"format": OTA_FORMAT, "update_id": self.update_id,
                       "ranges": [list(pair) for pair in self.ranges]})

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ChunkRequest:
        what = "ota chunk request"
        doc = _load_doc(data, what, "the OTA server (edge-flash)")
        return cls(_need(doc, "update_id", what), _need(doc, "ranges", what))

    @staticmethod
    def ranges_of(indexes: Iterable[int]) -> tuple[tuple[int, int], ...]:
        """The fewest ``[start, end)`` ranges covering ``indexes`` (any order, duplicates allowed)."""
        ranges: list[tuple[int, int]] = []
        for index in sorted(set(indexes)):
            check_int("chunk index", index, 0, MAX_CHUNK_INDEX)
            if ranges and ranges[-1][1] == index:
                ranges[-1] = (ranges[-1][0], index + 1)
            else:
                ranges.append((index, index + 1))
        return tuple(ranges)

    def indexes(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end)


# -- progress ---------------------------------------------------------------------------


class Phase(enum.StrEnum):
    """Where an update stands on one device."""

    OFFERED = "offered"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    TRIAL = "trial"  # the new agent runs, its health window is open
    COMMITTED = "committed"  # terminal success
    ROLLED_BACK = "rolled_back"  # terminal failure: back on the previous slot / model
    REFUSED = "refused"  # terminal failure: bad signature, unknown key, incompatible, corrupt
    FAILED = "failed"  # terminal failure: install error, disk full ...


TERMINAL_PHASES = frozenset({Phase.COMMITTED, Phase.ROLLED_BACK, Phase.REFUSED, Phase.FAILED})

_PROGRESS_KEYS = frozenset({"format", "update_id", "phase", "version", "received", "total", "reason",
                            "detail", "slot", "time_ms"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OtaProgress:
    """One device's update progress (retained on ``state/ota``).

    ``reason`` is machine-readable (``bad_signature``, ``hash_mismatch``,
    ``crash_loop`` ...); ``detail`` is for people and may span lines.
    """

    update_id: str
    phase: Phase
    version: str
    received: int = 0
    total: int = 0
    reason: str | None = None
    detail: str | None = None
    slot: str | None = None
    time_ms: int = 0
    extra: Mapping[str, Any] = field(default_factory=empty_map, hash=False)

    def __post_init__(self) -> None:
        check_name("ota progress update_id", self.update_id)
        try:
            phase = Phase(self.phase)
        except ValueError:
            known = ", ".join(p.value for p in Phase)
            raise CodecError(f"ota progress phase must be one of {known}, not {_short(self.phase)}") from None
        object.__setattr__(self, "phase", phase)
        check_text("ota progress version", self.version, max_chars=128)
        total = check_int("ota progress total", self.total, 0, MAX_CHUNK_INDEX + 1)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "received", check_int("ota progress received", self.received, 0, total))
        if self.reason is not None:
            check_text("ota progress reason", self.reason, max_chars=128)
        if self.detail is not None:
            if not isinstance(self.detail, str):
                raise CodecError(f"ota progress detail must be a string, not {_short(self.detail)}")
            if len(self.detail) > _DETAIL_MAX_CHARS:
                raise CodecError(f"ota progress detail is {len(self.detail)} characters; the limit is "
                                 f"{_DETAIL_MAX_CHARS}")
        if self.slot is not None:
            check_name("ota progress slot", self.slot)
        object.__setattr__(self, "time_ms", check_int("ota progress time_ms", self.time_ms))
        object.__setattr__(self, "extra", _json_map("ota progress extra", self.extra, _PROGRESS_KEYS))

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def to_json_bytes(self) -> bytes:
        doc: dict[str, Any] = dict(self.extra)
        doc.update({"format": OTA_FORMAT, "update_id": self.update_id, "phase": self.phase.value,
                    "version": self.version, "received": self.received, "total": self.total,
                    "time_ms": self.time_ms})
        for key in ("reason", "detail", "slot"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        return _dumps(doc)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> OtaProgress:
        what = "ota progress"
        doc = _load_doc(data, what, "the OTA server (edge-flash)")
        extra = {k: v for k, v in doc.items() if k not in _PROGRESS_KEYS}
        return cls(update_id=_need(doc, "update_id", what), phase=_need(doc, "phase", what),
                   version=_need(doc, "version", what), received=doc.get("received", 0),
                   total=doc.get("total", 0), reason=doc.get("reason"), detail=doc.get("detail"),
                   slot=doc.get("slot"), time_ms=doc.get("time_ms", 0), extra=extra)
