"""The envelope codec (schemas/envelope.py): layout, limits, and hostile input."""

from __future__ import annotations

import contextlib
import doctest
import os
import struct
import threading
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.envelope
from schemas.dictionaries import load_dictionary, shipped_dictionary_ids
from schemas.envelope import (
    FLAG_DICTIONARY,
    FLAG_ZSTD,
    HEADER_SIZE,
    MAGIC,
    EnvelopeCodec,
    EnvelopeHeader,
    peek_header,
)
from schemas.errors import CodecError, ConfigError, PayloadTooLarge, UnsupportedVersion

CODEC = EnvelopeCodec()
PLAIN_ZSTD = EnvelopeCodec(dictionary_id=0)

msgpack_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                   | st.floats(allow_nan=False) | st.text(max_size=30) | st.binary(max_size=30))
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (st.lists(children, max_size=6)
                      | st.dictionaries(st.text(max_size=10) | st.integers(-5, 5), children,
                                        max_size=6)),
    max_leaves=30)


def header(flags: int, dict_id: int, version: int = 1, magic: bytes = MAGIC) -> bytes:
    return struct.pack(">2sBBI", magic, version, flags, dict_id)


def telemetry(n: int) -> dict[str, Any]:
    """A compressible, realistic-looking body."""
    return {"type": "metrics", "device": "gw-1",
            "names": ["cpu_percent", "load1", "temp_c"] * n, "vals": list(range(n))}


def test_doctests() -> None:
    assert doctest.testmod(schemas.envelope).failed == 0


# -- layout --------------------------------------------------------------------------------


def test_small_bodies_go_uncompressed() -> None:
    data = CODEC.encode({"a": 1})
    assert data[:HEADER_SIZE] == header(0, 0)
    assert data[HEADER_SIZE:] == msgpack.packb({"a": 1})
    assert peek_header(data) == EnvelopeHeader(1, 0, 0)


def test_compressible_bodies_use_the_shipped_dictionary() -> None:
    body = telemetry(20)
    data = CODEC.encode(body)
    head = peek_header(data)
    assert head == EnvelopeHeader(1, FLAG_ZSTD | FLAG_DICTIONARY, 1)
    assert head.compressed and head.uses_dictionary
    assert len(data) < len(msgpack.packb(body))
    assert zstandard.get_frame_parameters(data[HEADER_SIZE:]).dict_id == 1
    assert CODEC.decode(data) == body


def test_plain_zstd_without_a_dictionary_is_readable_by_any_codec() -> None:
    data = PLAIN_ZSTD.encode(telemetry(20))
    assert peek_header(data) == EnvelopeHeader(1, FLAG_ZSTD, 0)
    assert CODEC.decode(data) == telemetry(20)


def test_compression_is_skipped_when_it_does_not_pay() -> None:
    noise = os.urandom(500)
    data = CODEC.encode(noise)
    assert peek_header(data).flags == 0
    assert CODEC.decode(data) == noise


def test_threshold_is_configurable() -> None:
    codec = EnvelopeCodec(compress_threshold=10**6)
    assert peek_header(codec.encode(telemetry(50))).flags == 0


def test_the_shipped_dictionary_carries_its_id() -> None:
    assert 1 in shipped_dictionary_ids()
    raw = load_dictionary(1)
    assert len(raw) == 4096
    assert zstandard.ZstdCompressionDict(raw).dict_id() == 1


@given(msgpack_values)
def test_round_trip(value: Any) -> None:
    assert CODEC.decode(CODEC.encode(value)) == value
    assert CODEC.decode(PLAIN_ZSTD.encode(value)) == value


def test_mappings_that_are_not_dicts_pack_as_maps() -> None:
    from types import MappingProxyType

    assert CODEC.decode(CODEC.encode(MappingProxyType({"a": (1, 2)}))) == {"a": [1, 2]}


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, {"a": complex(1, 2)}])
def test_unencodable_values_raise_codec_error(value: object) -> None:
    with pytest.raises(CodecError, match="cannot encode"):
        CODEC.encode(value)


# -- malformed input -----------------------------------------------------------------------


VALID = CODEC.encode(telemetry(20))
FRAME = VALID[HEADER_SIZE:]


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"", CodecError, "header alone"),
    (b"EB\x01\x00\x00\x00\x00", CodecError, "header alone"),
    (b"XX\x01\x00\x00\x00\x00\x00\x80", CodecError, "not an edgebus envelope"),
    (b'{"json": true}', CodecError, "not an edgebus envelope"),
    (header(0, 0, version=2) + b"\x80", UnsupportedVersion, "format version 2"),
    (header(0, 0, version=0) + b"\x80", UnsupportedVersion, "format version 0"),
    (header(0x04, 0) + b"\x80", CodecError, "unknown flag bits 0x04"),
    (header(0x81, 0) + b"\x80", CodecError, "unknown flag bits 0x80"),
    (header(FLAG_DICTIONARY, 1) + b"\x80", CodecError, "without 'zstd'"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 0) + FRAME, CodecError, "contradicts"),
    (header(FLAG_ZSTD, 1) + FRAME, CodecError, "contradicts"),
    (header(0, 0), CodecError, "corrupt msgpack"),
    (header(0, 0) + b"\xc1", CodecError, "corrupt msgpack"),
    (header(0, 0) + b"\x92\x01", CodecError, "corrupt msgpack"),
    (header(0, 0) + b"\x80\x80", CodecError, "1 trailing bytes after the msgpack"),
    (header(0, 0) + b"\xa2\xff\xfe", CodecError, "corrupt msgpack"),
    (header(0, 0) + b"\x81\x91\x01\x02", CodecError, "corrupt msgpack"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 9) + FRAME, CodecError, "dictionary 1 but"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + b"\x00" * 20, CodecError, "not a zstd frame"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + FRAME[:-5], CodecError, "corrupt zstd"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + FRAME + b"junk", CodecError, "corrupt zstd"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + FRAME + FRAME, CodecError, "corrupt zstd"),
    (header(FLAG_ZSTD, 0) + FRAME, CodecError, "made with dictionary 1"),
    (header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + PLAIN_ZSTD.encode(telemetry(20))[HEADER_SIZE:],
     CodecError, "made with dictionary 0"),
    (header(FLAG_ZSTD, 0) + zstandard.ZstdCompressor().compress(b"\xc1" * 200), CodecError,
     "corrupt msgpack"),
    (header(FLAG_ZSTD, 0) + zstandard.ZstdCompressor().compress(b"\x80\x80"), CodecError,
     "trailing bytes after the msgpack"),
])
def test_malformed_envelopes_are_refused_clearly(data: bytes, error: type[Exception],
                                                  message: str) -> None:
    with pytest.raises(error, match=message):
        CODEC.decode(data)


def test_unknown_dictionary_is_an_unsupported_version() -> None:
    frame = zstandard.ZstdCompressor(
        dict_data=zstandard.train_dictionary(1024, [os.urandom(8) + bytes(range(64))] * 200,
                                             dict_id=77)).compress(b"\x80" * 100)
    with pytest.raises(UnsupportedVersion, match="dictionary 77 is not shipped"):
        CODEC.decode(header(FLAG_ZSTD | FLAG_DICTIONARY, 77) + frame)


def test_non_bytes_are_refused() -> None:
    with pytest.raises(CodecError, match="bytes, not str"):
        CODEC.decode("EB")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted() -> None:
    assert CODEC.decode(bytearray(VALID)) == telemetry(20)
    assert CODEC.decode(memoryview(VALID)) == telemetry(20)


def test_a_failed_decode_does_not_spoil_the_next() -> None:
    broken = VALID[:-4]
    for _ in range(3):
        with pytest.raises(CodecError):
            CODEC.decode(broken)
        assert CODEC.decode(VALID) == telemetry(20)


# -- limits --------------------------------------------------------------------------------


def test_oversized_payloads_are_refused_both_ways() -> None:
    codec = EnvelopeCodec(max_payload_bytes=100)
    with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
        codec.encode(os.urandom(200))
    with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
        codec.decode(CODEC.encode(os.urandom(200)))
    assert codec.decode(codec.encode(os.urandom(50)))


def test_oversized_bodies_are_refused_both_ways() -> None:
    codec = EnvelopeCodec(max_body_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="max_body_bytes"):
        codec.encode(bytes(2000))
    with pytest.raises(PayloadTooLarge, match="declares 2003 bytes"):
        codec.decode(CODEC.encode(bytes(2000)))
    with pytest.raises(PayloadTooLarge, match="max_body_bytes"):
        codec.decode(EnvelopeCodec(compress_threshold=10**9).encode(os.urandom(1100)))


def test_zstd_bomb_with_declared_size_is_refused_before_decompressing() -> None:
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 * 1024 * 1024))
    assert len(frame) < 4096
    with pytest.raises(PayloadTooLarge, match="declares 67108864 bytes"):
        CODEC.decode(header(FLAG_ZSTD, 0) + frame)


def test_zstd_bomb_without_declared_size_is_bounded() -> None:
    frame = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(
        bytes(64 * 1024 * 1024))
    assert zstandard.get_frame_parameters(frame).content_size == zstandard.CONTENTSIZE_UNKNOWN
    with pytest.raises(PayloadTooLarge, match="expands beyond 4194304"):
        CODEC.decode(header(FLAG_ZSTD, 0) + frame)


def test_frames_without_declared_size_are_read_exactly() -> None:
    body = msgpack.packb(telemetry(30))
    unsized = zstandard.ZstdCompressor(write_content_size=False)
    frame = unsized.compress(body)
    assert CODEC.decode(header(FLAG_ZSTD, 0) + frame) == telemetry(30)
    small = EnvelopeCodec(max_body_bytes=len(body))
    assert small.decode(header(FLAG_ZSTD, 0) + frame) == telemetry(30)
    with pytest.raises(PayloadTooLarge):
        EnvelopeCodec(max_body_bytes=len(body) - 1).decode(header(FLAG_ZSTD, 0) + frame)
    with pytest.raises(CodecError, match="truncated"):
        CODEC.decode(header(FLAG_ZSTD, 0) + frame[:-3])
    with pytest.raises(CodecError, match="trailing bytes after the zstd frame"):
        CODEC.decode(header(FLAG_ZSTD, 0) + frame + b"xyz")
    with_dict = zstandard.ZstdCompressor(
        write_content_size=False, dict_data=zstandard.ZstdCompressionDict(load_dictionary(1)))
    envelope = header(FLAG_ZSTD | FLAG_DICTIONARY, 1) + with_dict.compress(body)
    assert CODEC.decode(envelope) == telemetry(30)


@pytest.mark.parametrize(("key", "value"), [
    ("compress_threshold", -1), ("max_payload_bytes", 8), ("max_body_bytes", 0), ("level", 0),
    ("level", 23), ("dictionary_id", 99), ("max_body_bytes", 1.5), ("level", True),
])
def test_bad_configuration_names_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        EnvelopeCodec(**{key: value})  # type: ignore[arg-type]


# -- hostile input never escapes as anything but CodecError --------------------------------


def decode_or_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        CODEC.decode(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    decode_or_codec_error(data)


@given(st.sampled_from([0, 1, 3, 2, 0x83]), st.sampled_from([0, 1, 2]), st.binary(max_size=200))
def test_arbitrary_bodies_behind_plausible_headers(flags: int, dict_id: int, body: bytes) -> None:
    decode_or_codec_error(header(flags, dict_id) + body)


envelopes = st.sampled_from([
    CODEC.encode(telemetry(20)),
    CODEC.encode({"small": True}),
    PLAIN_ZSTD.encode(telemetry(10)),
    header(FLAG_ZSTD, 0) + zstandard.ZstdCompressor(write_content_size=False).compress(
        msgpack.packb(telemetry(10))),
])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(envelopes))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "append", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at]
    return bytes(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_envelopes_raise_only_codec_errors(data: bytes) -> None:
    decode_or_codec_error(data)


@pytest.mark.slow
@settings(max_examples=5_000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_envelopes_heavy_fuzz(data: bytes) -> None:
    decode_or_codec_error(data)


# -- sharing -------------------------------------------------------------------------------


def test_one_codec_is_safe_to_share_between_threads() -> None:
    codec = EnvelopeCodec()
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                body = telemetry(n + i % 7)
                assert codec.decode(codec.encode(body)) == body
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_codecs_compare_by_configuration() -> None:
    assert EnvelopeCodec() == EnvelopeCodec()
    assert EnvelopeCodec(level=5) != EnvelopeCodec()
    assert hash(EnvelopeCodec()) == hash(EnvelopeCodec())
