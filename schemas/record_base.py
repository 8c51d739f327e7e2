"""What every wire record shares: the base class, the type registry and checked field access.

A record's body on the wire is a msgpack map with a type key (``"type"``), a
version key (``"v"``) and the record's own keys. Each record class has exactly
one way onto the wire (``to_wire``) and one way off it (``from_wire``), and
validates itself in ``__post_init__`` so a record that exists is a valid one,
however it was made.

Compatibility rules (FORMAT.md says the same for other languages):

* keys a decoder does not know are kept in ``extra`` and written back on
  encode, so an older coordinator relays a newer device's fields unharmed;
* a version newer than the decoder knows is refused with
  :class:`UnsupportedVersion`, because a version bump means old readers would
  misread the record;
* a record whose fields have wrong types or values is refused with a
  :class:`CodecError` naming the field.

Mapping fields (``extra``, ``Birth.versions``, ``Command.args``) are stored as
read-only :class:`types.MappingProxyType` views with lists turned into tuples,
so records stay frozen all the way down. Mappings are not hashable, so those
fields are left out of ``hash()`` (equal records still hash equally).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

import msgpack

from schemas.errors import CodecError, TopicError, UnsupportedVersion
from schemas.topics import validate_device_id, validate_name

__all__ = [
    "INT64_MAX",
    "TYPE_KEY",
    "VERSION_KEY",
    "Record",
    "SequencedBatch",
    "WireFields",
    "check_device",
    "check_int",
    "check_name",
    "check_text",
    "empty_map",
    "freeze_map",
    "jsonable",
    "record_from_body",
    "record_to_body",
    "register_record",
    "registered_types",
]

TYPE_KEY = "type"
VERSION_KEY = "v"
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Deeper structures are refused: msgpack-python packs at most ~500 levels, and a
# record that decodes but cannot be re-encoded would break relaying.
MAX_NESTING = 64

_EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})


def empty_map() -> Mapping[str, Any]:
    """The shared empty read-only mapping (a ``default_factory`` for mapping fields)."""
    return _EMPTY_MAP


class Record:
    """Base of the typed, versioned wire records.

    Subclasses are frozen, slotted dataclasses that set ``TYPE`` and
    ``VERSION``, list the body keys they write in ``WIRE_KEYS``, and implement
    ``to_wire``/``from_wire``/``to_json``. ``RECEIVER`` names who must be
    upgraded when a newer version arrives (it goes into the error message).
    """

    __slots__ = ()

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]
    WIRE_KEYS: ClassVar[frozenset[str]]
    RECEIVER: ClassVar[str] = "coordinator"

    extra: Mapping[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """This record's own body keys (without type, version and extra)."""
        raise NotImplementedError

    @classmethod
    def from_wire(cls, fields: WireFields, extra: Mapping[str, Any]) -> Record:
        """The record in a body whose type and version were already checked."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """A readable JSON-able view: full names, sequence numbers, plain ms times."""
        raise NotImplementedError


_Item = TypeVar("_Item")


class SequencedBatch(Record, Generic[_Item]):
    """A record whose items are numbered ``first_seq``, ``first_seq + 1``, ... in one epoch.

    Metrics batches number samples per device, detections batches frames per
    camera; both answer the same questions about their numbering here.
    """

    __slots__ = ()

    #: What one item is called in error messages ("sample", "frame").
    ITEM: ClassVar[str]
    first_seq: int

    def _items(self) -> tuple[_Item, ...]:
        raise NotImplementedError

    def seq_of(self, index: int) -> int:
        """The sequence number of item ``index``."""
        count = len(self._items())
        if not 0 <= index < count:
            raise IndexError(f"{self.ITEM} index {index} out of range (batch of {count})")
        return self.first_seq + index

    @property
    def next_seq(self) -> int:
        """The sequence number the stream's next batch starts at."""
        return self.first_seq + len(self._items())

    def numbered(self) -> Iterator[tuple[int, _Item]]:
        """``(seq, item)`` for every item, in order."""
        return enumerate(self._items(), self.first_seq)


_R = TypeVar("_R", bound=type[Record])
_REGISTRY: dict[str, type[Record]] = {}


def register_record(cls: _R) -> _R:
    """Class decorator: make ``cls`` decodable by its ``TYPE``."""
    known = _REGISTRY.setdefault(cls.TYPE, cls)
    # The same class imported twice under two module names (doctest does that) is harmless.
    if known is not cls and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"record type {cls.TYPE!r} is claimed by {known.__qualname__} and "
                         f"{cls.__qualname__}")
    return cls


def registered_types() -> dict[str, type[Record]]:
    """Every record class by type name."""
    return dict(_REGISTRY)


def record_to_body(record: Record) -> dict[str, Any]:
    """The msgpack map for ``record``: type, version, its keys, then its extra keys."""
    body: dict[str, Any] = {TYPE_KEY: record.TYPE, VERSION_KEY: record.VERSION}
    body.update(record.to_wire())
    body.update(record.extra)
    return body


def record_from_body(body: Any) -> Record:
    """The record in decoded msgpack ``body``; refuses unknown types and newer versions."""
    if not isinstance(body, dict):
        raise CodecError(f"a record body is a msgpack map, not {type(body).__name__}")
    type_name = body.get(TYPE_KEY)
    if not isinstance(type_name, str):
        raise CodecError(f"record body has no string {TYPE_KEY!r} key (got "
                         f"{_short(type_name)})")
    cls = _REGISTRY.get(type_name)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UnsupportedVersion(f"unknown record type {type_name[:64]!r} (this edgebus knows "
                                 f"{known}); upgrade the receiving side")
    version = body.get(VERSION_KEY)
    if type(version) is not int or version < 1:
        raise CodecError(f"{type_name} record: {VERSION_KEY!r} must be an integer >= 1, "
                         f"not {_short(version)}")
    if version > cls.VERSION:
        raise UnsupportedVersion(f"{type_name} record version {version} is newer than this "
                                 f"edgebus understands (max {cls.VERSION}); upgrade the "
                                 f"{cls.RECEIVER}")
    known_keys = cls.WIRE_KEYS
    extra = {key: value for key, value in body.items()
             if key not in known_keys and key != TYPE_KEY and key != VERSION_KEY}
    try:
        return cls.from_wire(WireFields(type_name, body), extra)
    except RecursionError:
        raise CodecError(f"{type_name} record is nested too deeply") from None


class WireFields:
    """Checked access to a body's keys; every failure is a :class:`CodecError` naming the key."""

    __slots__ = ("_body", "_record")

    def __init__(self, record: str, body: dict[Any, Any]) -> None:
        self._record = record
        self._body = body

    def error(self, key: str, problem: str) -> CodecError:
        return CodecError(f"{self._record} record: wire key {key!r} {problem}")

    def _get(self, key: str) -> Any:
        try:
            return self._body[key]
        except KeyError:
            raise self.error(key, "is missing") from None

    def has(self, key: str) -> bool:
        return self._body.get(key) is not None

    def get_int(self, key: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
        value = self._get(key)
        if type(value) is not int or not minimum <= value <= maximum:
            raise self.error(key, f"must be an integer in [{minimum}, {maximum}], not "
                                  f"{_short(value)}")
        return value

    def get_str(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_short(value)}")
        return value

    def get_optional_str(self, key: str) -> str | None:
        value = self._body.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"must be a string or nil, not {_short(value)}")
        return value

    def get_list(self, key: str, length: int | None = None) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be an array, not {_short(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"has {len(value)} entries; expected {length}")
        return value

    def get_int_list(self, key: str, length: int | None = None, minimum: int = INT64_MIN,
                     maximum: int = INT64_MAX) -> list[int]:
        values = self.get_list(key, length)
        for value in values:
            if type(value) is not int or not minimum <= value <= maximum:
                raise self.error(key, f"must hold integers in [{minimum}, {maximum}], found "
                                      f"{_short(value)}")
        return values

    def get_str_list(self, key: str) -> list[str]:
        values = self.get_list(key)
        for value in values:
            if not isinstance(value, str):
                raise self.error(key, f"must hold strings, found {_short(value)}")
        return values

    def get_map(self, key: str) -> dict[Any, Any]:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a map, not {_short(value)}")
        return value


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


# -- constructor checks (raise CodecError naming record.field) -----------------


def check_int(where: str, value: object, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """``value`` as a plain int in [minimum, maximum]; bools and floats are refused."""
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CodecError(f"{where} must be an integer, not {_short(value)}")
        value = int(value)
    if not minimum <= value <= maximum:
        raise CodecError(f"{where} must be in [{minimum}, {maximum}], not {value}")
    return value


def check_unit_float(where: str, value: object) -> float:
    """``value`` as a float in [0, 1] (ints 0 and 1 allowed)."""
    if type(value) is not float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CodecError(f"{where} must be a float in [0, 1], not {_short(value)}")
        value = float(value)
    if not 0.0 <= value <= 1.0:
        raise CodecError(f"{where} must be in [0, 1], not {value}")
    return value


def check_text(where: str, value: object, max_chars: int = 256, empty_ok: bool = False) -> str:
    """A printable string of bounded length (labels, versions, ids)."""
    if not isinstance(value, str):
        raise CodecError(f"{where} must be a string, not {_short(value)}")
    if not value and not empty_ok:
        raise CodecError(f"{where} must not be empty")
    if len(value) > max_chars:
        raise CodecError(f"{where} is {len(value)} characters; the limit is {max_chars}")
    if not value.isprintable():
        raise CodecError(f"{where} {value[:40]!r} contains control characters")
    return value


def check_device(where: str, value: object) -> str:
    """A device id (the topic rules), reported as a :class:`CodecError`."""
    try:
        return validate_device_id(value)  # type: ignore[arg-type]
    except TopicError as exc:
        raise CodecError(f"{where}: {exc}") from None


# Names that passed validation; bounded so hostile input cannot grow it.
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_MAX = 4096


def check_name(where: str, value: object) -> str:
    """A single-level name (metric, camera): the topic rules, reported as a CodecError."""
    if type(value) is str and value in _GOOD_NAMES:
        return value
    try:
        validate_name(value, "name")  # type: ignore[arg-type]
    except TopicError as exc:
        raise CodecError(f"{where}: {exc}") from None
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def check_tuple(where: str, value: object, item: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    """A list or tuple turned into a tuple, each item passed through ``item(where[i], x)``."""
    if not isinstance(value, list | tuple):
        raise CodecError(f"{where} must be a tuple or list, not {_short(value)}")
    return tuple(item(f"{where}[{i}]", x) for i, x in enumerate(value))


# -- freezing free-form values -------------------------------------------------

_SCALARS = (str, bytes, float, bool, type(None), msgpack.ExtType, msgpack.Timestamp)


def _freeze(where: str, value: Any, depth: int) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= 2**64 - 1:
            raise CodecError(f"{where}: integer {value} does not fit in 64 bits")
        return int(value)
    if depth >= MAX_NESTING:
        raise CodecError(f"{where} is nested more than {MAX_NESTING} levels deep")
    if isinstance(value, list | tuple):
        return tuple(_freeze(where, x, depth + 1) for x in value)
    if isinstance(value, Mapping):
        return MappingProxyType({_freeze_key(where, k): _freeze(where, v, depth + 1)
                                 for k, v in value.items()})
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise CodecError(f"{where}: {type(value).__name__} is not a msgpack value")


def _freeze_key(where: str, key: Any) -> Any:
    if isinstance(key, str | bytes | float | bool | type(None)):
        return key
    if isinstance(key, int):
        return _freeze(where, key, 0)
    raise CodecError(f"{where}: map key {_short(key)} is not a str, int, float, bool, nil "
                     "or bin")


def freeze_map(where: str, value: object, reserved: Iterable[str] = ()) -> Mapping[str, Any]:
    """A read-only deep copy of a str-keyed mapping of msgpack values.

    Keys in ``reserved`` (the record's own wire keys) are refused, so an extra
    field can never shadow a real one.
    """
    if not isinstance(value, Mapping):
        raise CodecError(f"{where} must be a mapping, not {_short(value)}")
    if not value:
        return _EMPTY_MAP
    reserved_keys = set(reserved)
    for key in value:
        if not isinstance(key, str):
            raise CodecError(f"{where}: keys must be strings, found {_short(key)}")
        if key in reserved_keys:
            raise CodecError(f"{where}: key {key!r} is a field of the record itself")
    frozen: Mapping[str, Any] = _freeze(where, value, 0)
    return frozen


def freeze_extra(record: type[Record], value: object) -> Mapping[str, Any]:
    """``extra`` checked against the record's own keys, read-only."""
    return freeze_map(f"{record.TYPE}.extra", value,
                      (*record.WIRE_KEYS, TYPE_KEY, VERSION_KEY))


# -- JSON view -----------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A msgpack value as JSON: bin as hex text, odd map keys as text, non-finite floats as text."""
    if isinstance(value, str | bool | int | type(None)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(jsonable(k)): jsonable(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(x) for x in value]
    if isinstance(value, msgpack.Timestamp):
        return {"timestamp_ns": value.to_unix_nano()}
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "hex": value.data.hex()}
    return repr(value)
