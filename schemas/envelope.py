"""The envelope: an 8-byte header and a msgpack body, zstd-compressed when that pays.

Layout (byte by byte in ``schemas/FORMAT.md``)::

    offset 0  2 bytes  magic b"EB"
    offset 2  1 byte   format version (1)
    offset 3  1 byte   flags: bit 0 body is a zstd frame, bit 1 compressed with a dictionary
    offset 4  4 bytes  dictionary id, big-endian uint32 (0 = none)
    offset 8  ...      body: msgpack, or one zstd frame holding msgpack

Decoding is defensive: whatever the bytes, :meth:`EnvelopeCodec.decode`
returns a msgpack object or raises a :class:`CodecError` subclass
(:class:`PayloadTooLarge` over a limit, :class:`UnsupportedVersion` for a
format or dictionary this build does not know). Decompression is bounded by
``max_body_bytes`` whether or not the frame declares its size, so a zstd bomb
costs nothing, and decoding by ``max_objects``: a body of a few MiB can hold
millions of one-byte empty arrays, each a Python object of ~60 bytes, so bytes
alone do not bound the memory and time a body costs.

>>> codec = EnvelopeCodec()
>>> codec.decode(codec.encode({"hello": [1, 2, 3]}))
{'hello': [1, 2, 3]}
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zstandard

from schemas.dictionaries import DEFAULT_DICTIONARY_ID, load_dictionary
from schemas.errors import CodecError, ConfigError, PayloadTooLarge, UnsupportedVersion

__all__ = [
    "FLAG_DICTIONARY",
    "FLAG_ZSTD",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_OBJECTS",
    "EnvelopeCodec",
    "EnvelopeHeader",
    "Payload",
    "pack_body",
    "peek_header",
    "unpack_body",
]

MAGIC = b"EB"
FORMAT_VERSION = 1
FLAG_ZSTD = 0x01
FLAG_DICTIONARY = 0x02
_KNOWN_FLAGS = FLAG_ZSTD | FLAG_DICTIONARY
_HEADER = struct.Struct(">2sBBI")
HEADER_SIZE = _HEADER.size

Payload = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The 8-byte header, already checked for consistency by :func:`peek_header`."""

    version: int
    flags: int
    dict_id: int

    @property
    def compressed(self) -> bool:
        """The body is one zstd frame."""
        return bool(self.flags & FLAG_ZSTD)

    @property
    def uses_dictionary(self) -> bool:
        """The frame was compressed with shipped dictionary :attr:`dict_id`."""
        return bool(self.flags & FLAG_DICTIONARY)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.flags, self.dict_id)


def peek_header(data: Payload) -> EnvelopeHeader:
    """The header of envelope ``data``, without touching the body.

    Raises :class:`CodecError` for a truncated or inconsistent header or one
    that is not an envelope's, :class:`UnsupportedVersion` for a newer format.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"an envelope is bytes, not {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise CodecError(f"envelope is {len(data)} bytes; the header alone is {HEADER_SIZE}")
    magic, version, flags, dict_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CodecError(f"not an edgebus envelope: starts with {bytes(magic)!r}, not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(f"envelope format version {version} is not one this edgebus "
                                 f"reads (it reads {FORMAT_VERSION}); upgrade the receiving side")
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"envelope has unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} "
                         f"(flags 0x{flags:02x}; known: 0x01 zstd, 0x02 dictionary)")
    if flags & FLAG_DICTIONARY and not flags & FLAG_ZSTD:
        raise CodecError("envelope flags say 'dictionary' without 'zstd'")
    if bool(flags & FLAG_DICTIONARY) != (dict_id != 0):
        raise CodecError(f"envelope dictionary id {dict_id} contradicts its flags "
                         f"0x{flags:02x}: a dictionary id is set exactly when bit 1 is")
    return EnvelopeHeader(version, flags, dict_id)


def _pack_default(obj: object) -> object:
    """msgpack hook: any read-only mapping (records keep theirs in MappingProxyType) is a map."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not a msgpack type")


#: Decoded objects a body may hold by default (array entries plus map keys and values).
MAX_OBJECTS = 200_000


class _OverBudget(Exception):
    """Raised inside msgpack's hooks: the body holds more objects than allowed."""


class _ObjectBudget:
    """Counts the entries of every array and map msgpack builds; stops it past the budget.

    msgpack calls the hooks as each container is finished (innermost first),
    so a body of a million empty arrays is stopped after ``limit`` of them,
    and no single container may be longer than the budget.
    """

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def array(self, items: list[Any]) -> list[Any]:
        self.left -= len(items)
        if self.left < 0:
            raise _OverBudget
        return items

    def map(self, mapping: dict[Any, Any]) -> dict[Any, Any]:
        self.left -= 2 * len(mapping)
        if self.left < 0:
            raise _OverBudget
        return mapping


def unpack_body(body: Payload, max_objects: int = MAX_OBJECTS) -> Any:
    """The msgpack object in ``body``; :class:`CodecError` if it is not exactly one.

    :class:`PayloadTooLarge` if it would hold more than ``max_objects``
    objects (array entries, map keys and values). Every object takes at least
    one byte, so a body no longer than that is decoded without counting (the
    usual case, at no cost).
    """
    budget = _ObjectBudget(max_objects) if len(body) > max_objects else None
    try:
        if budget is None:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        return msgpack.unpackb(body, raw=False, strict_map_key=False, list_hook=budget.array,
                               object_hook=budget.map, max_array_len=max_objects,
                               max_map_len=max_objects // 2)
    except _OverBudget:
        raise PayloadTooLarge(f"body holds more than {max_objects} objects (max_objects)") from None
    except msgpack.ExtraData as exc:
        extra = getattr(exc, "extra", b"")  # not in msgpack's type stubs
        raise CodecError(f"{len(extra)} trailing bytes after the msgpack body") from None
    except ValueError as exc:
        if budget is not None and "exceeds max_" in str(exc):  # one array or map longer than the budget
            raise PayloadTooLarge(f"body holds more than {max_objects} objects (max_objects): "
                                  f"{exc}") from None
        raise CodecError(f"corrupt msgpack body: {exc}") from exc
    except Exception as exc:
        # msgpack reports bad input as ValueError, TypeError (unhashable map
        # keys), UnicodeDecodeError or its own classes: all of it is a corrupt body.
        raise CodecError(f"corrupt msgpack body: {exc}") from exc


def pack_body(obj: object) -> bytes:
    """``obj`` as msgpack (bin type on; any Mapping packs as a map)."""
    try:
        return msgpack.packb(obj, use_bin_type=True, default=_pack_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {type(obj).__name__} as msgpack: {exc}") from exc


class _ContextPool:
    """zstd contexts lent out one operation at a time.

    A zstd context must never be used by two threads at once, and making one
    costs ~11 µs against ~1 µs to compress a small body, so contexts are reused:
    ``list.pop`` and ``list.append`` are atomic, so a borrowed context is private
    to its borrower without a lock, and the pool grows to the number of threads
    using the codec at the same moment.
    """

    __slots__ = ("_free", "_make")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._free: list[Any] = []

    def borrow(self) -> Any:
        try:
            return self._free.pop()
        except IndexError:
            return self._make()

    def give_back(self, ctx: Any) -> None:
        self._free.append(ctx)


@dataclass(frozen=True, slots=True)
class EnvelopeCodec:
    """Turns msgpack-able objects into envelopes and back, within size limits.

    ``compress_threshold``: bodies shorter than this go uncompressed (zstd's
    frame overhead cannot pay). A compressed body is used only when it is
    actually smaller. ``max_payload_bytes`` bounds the envelope on the wire,
    ``max_body_bytes`` the msgpack body after decompression, ``max_objects``
    the objects decoded from it (see :func:`unpack_body`). ``dictionary_id``
    names the shipped dictionary new envelopes are compressed with (0: plain
    zstd); any shipped dictionary is accepted when decoding.

    One instance may be shared by any number of threads (see ``_ContextPool``).
    """

    compress_threshold: int = 64
    max_payload_bytes: int = 256 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_objects: int = MAX_OBJECTS
    level: int = 3
    dictionary_id: int = DEFAULT_DICTIONARY_ID
    _compressors: _ContextPool = field(init=False, repr=False, compare=False)
    _decompressors: dict[int, _ContextPool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("compress_threshold", "max_payload_bytes", "max_body_bytes", "max_objects", "level",
                    "dictionary_id"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"codec {key} must be an integer, not {value!r}")
        if self.compress_threshold < 0:
            raise ConfigError("codec compress_threshold must be >= 0, not "
                              f"{self.compress_threshold}")
        if self.max_payload_bytes <= HEADER_SIZE:
            raise ConfigError(f"codec max_payload_bytes must exceed the {HEADER_SIZE}-byte "
                              f"header, not {self.max_payload_bytes}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"codec max_body_bytes must be positive, not {self.max_body_bytes}")
        if self.max_objects < 1:
            raise ConfigError(f"codec max_objects must be positive, not {self.max_objects}")
        if not 1 <= self.level <= zstandard.MAX_COMPRESSION_LEVEL:
            raise ConfigError(f"codec level must be 1-{zstandard.MAX_COMPRESSION_LEVEL}, "
                              f"not {self.level}")
        cdict: zstandard.ZstdCompressionDict | None = None
        if self.dictionary_id:
            try:
                cdict = zstandard.ZstdCompressionDict(load_dictionary(self.dictionary_id),
                                                      dict_type=zstandard.DICT_TYPE_FULLDICT)
            except UnsupportedVersion as exc:
                raise ConfigError(f"codec dictionary_id: {exc}") from exc
            # Each codec owns its dictionary object: precomputing for another
            # level would free the tables a live compressor points at.
            cdict.precompute_compress(level=self.level)

        def make_compressor() -> zstandard.ZstdCompressor:
            # No checksum: MQTT runs over TCP, and msgpack catches the rest.
            return zstandard.ZstdCompressor(level=self.level, dict_data=cdict,
                                            write_checksum=False, write_content_size=True,
                                            write_dict_id=True)

        object.__setattr__(self, "_compressors", _ContextPool(make_compressor))
        object.__setattr__(self, "_decompressors", {})

    # -- encoding -------------------------------------------------------------

    def encode(self, obj: object) -> bytes:
        """``obj`` packed as msgpack and wrapped in an envelope."""
        return self.wrap(pack_body(obj))

    def wrap(self, body: bytes) -> bytes:
        """An envelope around msgpack ``body``, compressed when that makes it smaller."""
        if len(body) > self.max_body_bytes:
            raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is "
                                  f"{self.max_body_bytes} (max_body_bytes)")
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0)
        if len(body) >= self.compress_threshold:
            compressor = self._compressors.borrow()
            try:
                frame = compressor.compress(body)
            finally:
                self._compressors.give_back(compressor)
            if len(frame) < len(body):
                flags = FLAG_ZSTD | (FLAG_DICTIONARY if self.dictionary_id else 0)
                header = _HEADER.pack(MAGIC, FORMAT_VERSION, flags, self.dictionary_id)
                body = frame
        envelope = header + body
        if len(envelope) > self.max_payload_bytes:
            raise PayloadTooLarge(f"envelope is {len(envelope)} bytes; the limit is "
                                  f"{self.max_payload_bytes} (max_payload_bytes)")
        return envelope

    # -- decoding -------------------------------------------------------------

    def decode(self, data: Payload) -> Any:
        """The msgpack object in envelope ``data``; a :class:`CodecError` subclass if malformed."""
        return unpack_body(self.unwrap(data), self.max_objects)

    def unwrap(self, data: Payload) -> bytes | memoryview:
        """The msgpack body of envelope ``data``, decompressed and size-checked."""
        header = peek_header(data)
        if len(data) > self.max_payload_bytes:
            raise PayloadTooLarge(f"envelope is {len(data)} bytes; the limit is "
                                  f"{self.max_payload_bytes} (max_payload_bytes)")
        body = memoryview(data)[HEADER_SIZE:]
        if not header.compressed:
            if len(body) > self.max_body_bytes:
                raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is "
                                      f"{self.max_body_bytes} (max_body_bytes)")
            return body
        return self._decompress(body, header.dict_id)

    def _decompressor_pool(self, dict_id: int) -> _ContextPool:
        pool = self._decompressors.get(dict_id)
        if pool is not None:
            return pool
        ddict = None
        if dict_id:
            ddict = zstandard.ZstdCompressionDict(load_dictionary(dict_id),
                                                  dict_type=zstandard.DICT_TYPE_FULLDICT)
        # Windows beyond what max_body_bytes could ever need are refused, which
        # bounds the memory a hostile frame header can ask for.
        window = 1 << max(23, (self.max_body_bytes - 1).bit_length())

        def make_decompressor() -> zstandard.ZstdDecompressor:
            return zstandard.ZstdDecompressor(dict_data=ddict, max_window_size=window)

        return self._decompressors.setdefault(dict_id, _ContextPool(make_decompressor))

    def _decompress(self, frame: memoryview, dict_id: int) -> bytes:
        try:
            params = zstandard.get_frame_parameters(frame)
        except zstandard.ZstdError as exc:
            raise CodecError(f"envelope body is not a zstd frame: {exc}") from exc
        if params.dict_id != dict_id:
            raise CodecError(f"zstd frame was made with dictionary {params.dict_id} but the "
                             f"envelope header names dictionary {dict_id}")
        size = params.content_size
        sized = size != zstandard.CONTENTSIZE_UNKNOWN
        if sized and size > self.max_body_bytes:
            raise PayloadTooLarge(f"zstd frame declares {size} bytes; the limit is "
                                  f"{self.max_body_bytes} (max_body_bytes)")
        pool = self._decompressor_pool(dict_id)
        dctx = pool.borrow()
        try:
            if sized:
                body: bytes = dctx.decompress(frame, allow_extra_data=False)
                return body
            return self._decompress_unsized(dctx, frame)
        except zstandard.ZstdError as exc:
            raise CodecError(f"corrupt zstd body: {exc}") from exc
        finally:
            pool.give_back(dctx)

    def _decompress_unsized(self, dctx: zstandard.ZstdDecompressor, frame: memoryview) -> bytes:
        """A frame that does not declare its size (streaming encoders): bounded, then strict."""
        with dctx.stream_reader(frame) as reader:
            # Reads at most one byte past the limit, however far the frame would expand.
            if len(reader.read(self.max_body_bytes + 1)) > self.max_body_bytes:
                raise PayloadTooLarge(f"zstd frame expands beyond {self.max_body_bytes} "
                                      "bytes (max_body_bytes)")
        # Known to fit now; decompress again strictly, to see truncation and trailing bytes.
        stream = dctx.decompressobj()
        body: bytes = stream.decompress(frame)
        if not stream.eof:
            raise CodecError("zstd frame is truncated")
        if stream.unused_data:
            raise CodecError(f"{len(stream.unused_data)} trailing bytes after the zstd frame")
        return body
