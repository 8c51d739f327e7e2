"""OTA messages (schemas/ota.py): manifest, offer, chunk frames, chunk requests, progress."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.birth import Birth
from schemas.command import Command
from schemas.errors import CodecError, UnsupportedVersion
from schemas.messages import DEFAULT_CODEC, decode_record, encode_record
from schemas.ota import (
    MAX_CHUNK_INDEX,
    MIN_CHUNK_SIZE,
    OTA_FORMAT,
    TERMINAL_PHASES,
    ChunkRequest,
    OtaProgress,
    Phase,
    SignedManifest,
    UpdateManifest,
    decode_chunk,
    encode_chunk,
)

FORMAT_MD = Path(__file__).resolve().parents[1] / "schemas" / "FORMAT.md"
CREATED = "2025-11-23T12:00:00Z"
ARTIFACT = bytes(range(256)) * 20  # 5120 bytes: five chunks of 1024


def manifest(data: bytes = ARTIFACT, **overrides: Any) -> UpdateManifest:
    kwargs: dict[str, Any] = {"update_id": "u-1", "kind": "model", "name": "person.onnx",
                              "version": "2.0", "chunk_size": MIN_CHUNK_SIZE, "created": CREATED}
    kwargs.update(overrides)
    return UpdateManifest.for_artifact(data, **kwargs)


def fields_of(m: UpdateManifest, **changes: Any) -> dict[str, Any]:
    doc = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    doc.update(changes)
    return doc


# -- the manifest ---------------------------------------------------------------------


def test_for_artifact_computes_the_digests_and_chunk_ranges() -> None:
    data = ARTIFACT + b"tail"
    m = manifest(data)
    assert m.size == len(data) and m.chunk_count == 6
    assert m.sha256 == hashlib.sha256(data).hexdigest()
    for i in range(m.chunk_count):
        offset, length = m.chunk_range(i)
        assert hashlib.sha256(data[offset:offset + length]).hexdigest() == m.chunk_sha256[i]
    assert m.chunk_range(5) == (5120, 4)
    assert b"".join(data[o:o + n] for o, n in map(m.chunk_range, range(6))) == data
    for bad in (-1, 6, True):
        with pytest.raises(IndexError):
            m.chunk_range(bad)


@given(data=st.binary(min_size=1, max_size=5000), chunk_size=st.integers(MIN_CHUNK_SIZE, 2048),
       window=st.floats(0.5, 3600), caps=st.lists(st.sampled_from(["cameras", "ota", "gpu"])))
def test_manifest_round_trips_through_its_canonical_bytes(data: bytes, chunk_size: int, window: float,
                                                          caps: list[str]) -> None:
    m = manifest(data, chunk_size=chunk_size, health_window_s=window,
                 requires={"capabilities": caps, "target": "aarch64"})
    raw = m.to_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert UpdateManifest.from_bytes(raw) == m
    assert UpdateManifest.from_bytes(raw).to_bytes() == raw


def test_manifest_keeps_unknown_keys_and_writes_them_back() -> None:
    doc = json.loads(manifest().to_bytes())
    doc["delta_from"] = {"version": "1.9", "sha256": "ab"}
    parsed = UpdateManifest.from_bytes(json.dumps(doc).encode())
    assert parsed.extra == {"delta_from": {"version": "1.9", "sha256": "ab"}}
    assert json.loads(parsed.to_bytes()) == doc


def test_a_newer_manifest_format_is_refused_naming_the_agent() -> None:
    doc = json.loads(manifest().to_bytes())
    doc["format"] = OTA_FORMAT + 1
    with pytest.raises(UnsupportedVersion, match="upgrade the agent"):
        UpdateManifest.from_bytes(json.dumps(doc).encode())


def test_requires_and_health_window_default_when_absent() -> None:
    doc = json.loads(manifest().to_bytes())
    del doc["requires"], doc["health_window_s"]
    parsed = UpdateManifest.from_bytes(json.dumps(doc).encode())
    assert parsed.requires == {} and parsed.health_window_s == 60.0


BAD_FIELDS = [
    ("update_id", "a/b", "update_id"),
    ("update_id", "", "update_id"),
    ("kind", "firmware", "kind"),
    ("name", "../etc/passwd", "name"),
    ("name", "..", "name"),
    ("version", "", "version"),
    ("version", "x" * 129, "version"),
    ("version", 2, "version"),
    ("size", 0, "size"),
    ("size", 2 * 1024**3 + 1, "size"),
    ("size", 5120.0, "size"),
    ("sha256", "AB" * 32, "sha256"),
    ("sha256", "ab", "sha256"),
    ("chunk_size", 512, "chunk_size"),
    ("chunk_size", 2 * 1024**2, "chunk_size"),
    ("chunk_sha256", ("0" * 64,) * 4, "chunk_sha256 has 4 digests"),
    ("chunk_sha256", ("0" * 63,) * 5, r"chunk_sha256\[0\]"),
    ("chunk_sha256", "0" * 64, "chunk_sha256"),
    ("created", "yesterday", "created"),
    ("created", "2025-11-23T12:00:00", "created .* UTC"),
    ("created", "2025-11-23T12:00:00+01:00", "created .* UTC"),
    ("requires", [], "requires"),
    ("requires", {"capabilities": "cameras"}, r"requires\['capabilities'\]"),
    ("requires", {"target": 5}, r"requires\['target'\]"),
    ("requires", {"x": b"bytes"}, "requires is not JSON"),
    ("health_window_s", 0, "health_window_s"),
    ("health_window_s", float("nan"), "health_window_s"),
    ("health_window_s", True, "health_window_s"),
    ("extra", {"size": 1}, "extra: key 'size'"),
    ("extra", {"format": 2}, "extra: key 'format'"),
    ("extra", {"x": float("inf")}, "extra is not JSON"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_FIELDS)
def test_every_manifest_field_is_checked_and_named(key: str, value: Any, message: str) -> None:
    with pytest.raises(CodecError, match=f"update manifest {message}"):
        UpdateManifest(**fields_of(manifest(), **{key: value}))


@pytest.mark.parametrize("key", ["update_id", "kind", "name", "version", "size", "sha256", "chunk_size",
                                 "chunk_sha256", "created"])
def test_a_missing_manifest_key_is_named(key: str) -> None:
    doc = json.loads(manifest().to_bytes())
    del doc[key]
    with pytest.raises(CodecError, match=f"key '{key}' is missing"):
        UpdateManifest.from_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize(("data", "message"), [
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1]", "JSON object"),
    (b'{"update_id": "u"}', "'format'"),
    (b'{"format": "1"}', "'format'"),
    (b'{"format": 0}', "'format'"),
    ("{}", "must be bytes"),
])
def test_malformed_manifest_documents_are_codec_errors(data: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        UpdateManifest.from_bytes(data)


def test_manifest_is_frozen_and_hashable() -> None:
    m = manifest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.size = 1  # type: ignore[misc]
    assert hash(m) == hash(UpdateManifest.from_bytes(m.to_bytes()))


# -- the offer ------------------------------------------------------------------------


def test_offer_round_trips_through_an_ota_command_envelope() -> None:
    signed = SignedManifest(manifest().to_bytes(), "0123456789abcdef", bytes(range(64)))
    command = Command(device="gw-1", name="ota", command_id="c1", time_ms=1,
                      args=signed.to_offer(rollout="r-7"), reply_to="edgebus/_reply/x")
    received = decode_record(encode_record(command))
    assert isinstance(received, Command)
    assert received.args["rollout"] == "r-7"
    again = SignedManifest.from_offer(received.args)
    assert again == signed
    assert again.manifest == manifest()
    assert signed.to_offer()["rollout"] is None


def test_the_offer_keeps_the_signed_bytes_exactly() -> None:
    # A non-canonical (but valid) document must not be re-encoded: the signature covers these bytes.
    raw = json.dumps(json.loads(manifest().to_bytes()), indent=1).encode()
    signed = SignedManifest(raw, "k", b"\0" * 64)
    assert signed.manifest_bytes == raw and signed.to_offer()["manifest"] == raw


@pytest.mark.parametrize(("args", "message"), [
    ({"key_id": "k", "signature": b"\0" * 64}, "arg 'manifest' is missing"),
    ({"manifest": b"{}", "signature": b"\0" * 64}, "arg 'key_id' is missing"),
    ({"manifest": b"{}", "key_id": "k"}, "arg 'signature' is missing"),
    ({"manifest": "text", "key_id": "k", "signature": b"\0" * 64}, "manifest must be bytes"),
    ({"manifest": None, "key_id": "k", "signature": b"\0" * 64}, "manifest must be bytes"),
    ({"manifest": b"", "key_id": 5, "signature": b"\0" * 64}, "key_id"),
    ({"manifest": b"", "key_id": "", "signature": b"\0" * 64}, "key_id"),
    ({"manifest": b"", "key_id": "k", "signature": "sig"}, "signature must be bytes"),
    ({"manifest": b"", "key_id": "k", "signature": b"\0" * 63}, "signature is 63 bytes"),
    ({"manifest": b"{", "key_id": "k", "signature": b"\0" * 64}, "not valid JSON"),
])
def test_bad_offers_name_the_bad_arg(args: dict[str, Any], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        SignedManifest.from_offer(args)


def test_an_offer_of_a_newer_manifest_format_is_unsupported() -> None:
    doc = json.loads(manifest().to_bytes())
    doc["format"] = 2
    with pytest.raises(UnsupportedVersion):
        SignedManifest.from_offer({"manifest": json.dumps(doc).encode(), "key_id": "k",
                                   "signature": b"\0" * 64})


# -- chunk frames ---------------------------------------------------------------------


@given(update_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True),
       index=st.integers(0, MAX_CHUNK_INDEX), data=st.binary(max_size=2048))
def test_chunk_frames_round_trip(update_id: str, index: int, data: bytes) -> None:
    frame = encode_chunk(update_id, index, data)
    assert msgpack.unpackb(frame) == [OTA_FORMAT, update_id, index, data]
    assert decode_chunk(frame) == (update_id, index, data)


def test_chunk_frame_ignores_trailing_items_and_refuses_a_newer_format() -> None:
    assert decode_chunk(msgpack.packb([1, "u", 3, b"x", "later"])) == ("u", 3, b"x")
    with pytest.raises(UnsupportedVersion, match="upgrade the agent"):
        decode_chunk(msgpack.packb([2, "u", 3, b"x"]))


@pytest.mark.parametrize(("payload", "message"), [
    (b"\xc1", "not msgpack"),
    (b"", "not msgpack"),
    (msgpack.packb([1, "u", 3, b"x"]) + b"\x00", "not msgpack"),
    (msgpack.packb({"format": 1}), "array"),
    (msgpack.packb([]), "array"),
    (msgpack.packb(["1", "u", 0, b""]), "format"),
    (msgpack.packb([1, "u", 0]), "3 items"),
    (msgpack.packb([1, "a/b", 0, b""]), "update_id"),
    (msgpack.packb([1, "u", -1, b""]), "index"),
    (msgpack.packb([1, "u", MAX_CHUNK_INDEX + 1, b""]), "index"),
    (msgpack.packb([1, "u", 0, "text"], use_bin_type=True), "data must be msgpack bin"),
])
def test_bad_chunk_frames_are_codec_errors(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_chunk(payload)


def test_encode_chunk_checks_its_arguments() -> None:
    with pytest.raises(CodecError, match="update_id"):
        encode_chunk("a b", 0, b"")
    with pytest.raises(CodecError, match="index"):
        encode_chunk("u", -1, b"")
    with pytest.raises(CodecError, match="data must be bytes"):
        encode_chunk("u", 0, "text")  # type: ignore[arg-type]


# -- chunk requests -------------------------------------------------------------------


@given(st.sets(st.integers(0, 300), min_size=1))
def test_ranges_of_covers_exactly_the_indexes_with_the_fewest_ranges(indexes: set[int]) -> None:
    ranges = ChunkRequest.ranges_of(indexes)
    request = ChunkRequest("u", ranges)
    assert list(request.indexes()) == sorted(indexes)
    # Fewest: adjacent ranges would have been merged.
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
    assert ChunkRequest.from_json_bytes(request.to_json_bytes()) == request


def test_the_documented_chunk_request_is_what_the_code_writes() -> None:
    match = re.search(r"`(\{\"format\":1,\"update_id\".*?\})`", FORMAT_MD.read_text())
    assert match, "FORMAT.md lost its chunk request example"
    documented = match.group(1).encode()
    request = ChunkRequest.from_json_bytes(documented)
    assert request.ranges == ((0, 8), (12, 13))
    assert json.loads(request.to_json_bytes()) == json.loads(documented)


@pytest.mark.parametrize(("ranges", "message"), [
    ((), "non-empty"),
    ([[0]], r"ranges\[0\] must be a \[start, end\) pair"),
    ([[3, 3]], "empty"),
    ([[4, 2]], "empty"),
    ([[0, 4], [3, 6]], "overlaps"),
    ([[5, 6], [0, 1]], "overlaps or precedes"),
    ([[-1, 2]], "start"),
    ([[0, MAX_CHUNK_INDEX + 2]], "end"),
    ([[0, 1.5]], "end"),
])
def test_bad_chunk_requests_are_refused(ranges: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        ChunkRequest("u", ranges)


def test_chunk_request_json_checks() -> None:
    assert ChunkRequest.from_json_bytes(b'{"format":1,"update_id":"u","ranges":[[0,1]],"hint":1}') \
        == ChunkRequest("u", ((0, 1),))
    with pytest.raises(UnsupportedVersion, match="upgrade the OTA server"):
        ChunkRequest.from_json_bytes(b'{"format":2,"update_id":"u","ranges":[[0,1]]}')
    with pytest.raises(CodecError, match="'ranges' is missing"):
        ChunkRequest.from_json_bytes(b'{"format":1,"update_id":"u"}')
    with pytest.raises(CodecError, match="update_id"):
        ChunkRequest.from_json_bytes(b'{"format":1,"update_id":"a/b","ranges":[[0,1]]}')
    with pytest.raises(CodecError, match="chunk index"):
        ChunkRequest.ranges_of([-1])


# -- progress -------------------------------------------------------------------------


def test_progress_round_trips_and_writes_optional_keys_only_when_set() -> None:
    plain = OtaProgress(update_id="u-1", phase=Phase.DOWNLOADING, version="2.0", received=3, total=5,
                        time_ms=17)
    assert json.loads(plain.to_json_bytes()) == {"format": 1, "update_id": "u-1", "phase": "downloading",
                                                 "version": "2.0", "received": 3, "total": 5, "time_ms": 17}
    failed = OtaProgress(update_id="u-1", phase=Phase.ROLLED_BACK, version="2.0", reason="crash_loop",
                         detail="exit 1\nTraceback ...", slot="slot-b", extra={"attempts": 3})
    for progress in (plain, failed):
        assert OtaProgress.from_json_bytes(progress.to_json_bytes()) == progress
    assert failed.terminal and not plain.terminal


def test_phases_from_strings_and_terminal_set() -> None:
    progress = OtaProgress(update_id="u", phase="trial", version="1")  # type: ignore[arg-type]
    assert progress.phase is Phase.TRIAL
    assert {p.value for p in TERMINAL_PHASES} == {"committed", "rolled_back", "refused", "failed"}
    assert [p.terminal for p in (OtaProgress(update_id="u", phase=p, version="1") for p in Phase)] \
        == [p in TERMINAL_PHASES for p in Phase]


def test_progress_keeps_unknown_keys_and_refuses_a_newer_format() -> None:
    doc = {"format": 1, "update_id": "u", "phase": "offered", "version": "1", "eta_s": 30}
    progress = OtaProgress.from_json_bytes(json.dumps(doc).encode())
    assert progress.extra == {"eta_s": 30}
    assert json.loads(progress.to_json_bytes())["eta_s"] == 30
    doc["format"] = 2
    with pytest.raises(UnsupportedVersion, match="upgrade the OTA server"):
        OtaProgress.from_json_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize(("changes", "message"), [
    ({"update_id": "a b"}, "update_id"),
    ({"phase": "exploded"}, "phase must be one of"),
    ({"version": ""}, "version"),
    ({"received": 6}, "received"),
    ({"received": -1}, "received"),
    ({"total": -1}, "total"),
    ({"reason": ""}, "reason"),
    ({"reason": "a\nb"}, "reason"),
    ({"detail": 5}, "detail must be a string"),
    ({"detail": "x" * 4097}, "detail is 4097 characters"),
    ({"slot": "slot/a"}, "slot"),
    ({"time_ms": -5}, "time_ms"),
    ({"extra": {"phase": "x"}}, "extra: key 'phase'"),
    ({"extra": {"b": b"x"}}, "extra is not JSON"),
])
def test_every_progress_field_is_checked_and_named(changes: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"update_id": "u", "phase": Phase.DOWNLOADING, "version": "1", "received": 2,
                              "total": 5}
    kwargs.update(changes)
    with pytest.raises(CodecError, match=f"ota progress {message}"):
        OtaProgress(**kwargs)


def test_progress_json_needs_its_keys() -> None:
    with pytest.raises(CodecError, match="'phase' is missing"):
        OtaProgress.from_json_bytes(b'{"format":1,"update_id":"u","version":"1"}')


# -- birth groups ---------------------------------------------------------------------


def birth(**kwargs: Any) -> Birth:
    return Birth(device="gw-1", epoch=1, agent_version="0.2", time_ms=5, capabilities=("ota",), **kwargs)


def test_birth_groups_round_trip_and_are_written_only_when_set() -> None:
    with_groups = birth(groups=("lobby", "floor-2"))
    received = decode_record(encode_record(with_groups))
    assert isinstance(received, Birth) and received.groups == ("lobby", "floor-2")
    assert with_groups.to_wire()["groups"] == ("lobby", "floor-2")
    assert with_groups.to_json()["groups"] == ["lobby", "floor-2"]
    assert "groups" not in birth().to_wire() and "groups" not in birth().to_json()
    received = decode_record(encode_record(birth()))
    assert isinstance(received, Birth) and received.groups == ()


def test_birth_without_groups_is_byte_identical_to_what_older_agents_send() -> None:
    # The version-1 body an agent without groups support wrote: same keys, same order.
    old_body = {"type": "birth", "v": 1, "device": "gw-1", "epoch": 1, "agent_version": "0.2",
                "capabilities": ["ota"], "versions": {}, "time_ms": 5}
    assert DEFAULT_CODEC.decode(encode_record(birth())) == old_body


@pytest.mark.parametrize("groups", [("a b",), ("",), ("_all",), ("x/y",), "lobby", (5,)])
def test_birth_groups_are_names(groups: Any) -> None:
    with pytest.raises(CodecError, match="birth groups"):
        birth(groups=groups)
