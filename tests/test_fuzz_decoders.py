"""Fuzzing the decoders with hypothesis: arbitrary and mutated inputs, a CPU and memory budget per input.

The targets (tests/fuzz_targets.py) fail only on a real defect: an exception
other than the decoder's documented error, two decoding paths that disagree,
or a decoded value its own encoder does not reproduce. Every input must also
stay within :data:`CPU_S` seconds of CPU and :data:`PEAK_BYTES` of memory
(tracemalloc), generous bounds that a decompression or object bomb would
blow through. The atheris runs of the same targets, 100,000 inputs each, are
in tests/test_fuzz_atheris.py (``make test-slow``).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.envelope import EnvelopeCodec
from tests.fuzz_targets import SEEDS, TARGETS, within_budget

CPU_S = 2.0
PEAK_BYTES = 64 * 2**20
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=False)

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.integers(-5, 300)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-3, 3), inner, max_size=6),
                      max_leaves=30)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes flipped, inserted, removed or cut off."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "cut":
            del data[at:]
    return bytes(data)


@st.composite
def edited_bodies(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid msgpack body (a map, or a list for the coordination wire) with a field replaced or added."""
    body: Any = msgpack.unpackb(draw(st.sampled_from(seeds)), raw=False, strict_map_key=False)
    if isinstance(body, dict):
        key = draw(st.sampled_from(sorted(body, key=str)) | st.text(max_size=8))
        body[key] = draw(values)
    elif isinstance(body, list) and body:
        body[draw(st.integers(0, len(body) - 1))] = draw(values)
    return msgpack.packb(body, use_bin_type=True)


def envelope_bodies(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid envelopes whose msgpack body was edited."""
    codec = EnvelopeCodec()
    return edited_bodies(seeds).map(lambda body: codec.wrap(body))


def bodies_of(seeds: list[bytes]) -> list[bytes]:
    codec = EnvelopeCodec()
    return [bytes(codec.unwrap(s)) for s in seeds]


@st.composite
def pbft_edited(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed PBFT frame with one field of its (first) signed body replaced; the signature stays as it was."""
    frame: Any = msgpack.unpackb(draw(st.sampled_from(seeds)), raw=False)
    signed = frame[2] if frame[1] in ("s", "ev") else frame[2][0]
    signed = signed[0] if frame[1] == "ev" else signed
    body = msgpack.unpackb(signed[0], raw=False)
    body[draw(st.integers(1, max(len(body) - 1, 1)))] = draw(values)
    signed[0] = msgpack.packb(body, use_bin_type=True)
    return bytes(msgpack.packb(frame, use_bin_type=True))


def pbft_frames() -> st.SearchStrategy[bytes]:
    seeds = SEEDS["pbft_wire"]
    return st.binary(max_size=1024) | mutated(seeds) | pbft_edited(seeds) | edited_bodies(seeds)


def pbft_sequences() -> st.SearchStrategy[bytes]:
    """``pbft_replica``'s layout (tests/fuzz_pbft.py): a mode byte, then ticks, length and frame, repeated."""
    frames = st.lists(st.tuples(st.integers(0, 3), pbft_frames()), max_size=6)
    return st.tuples(st.integers(0, 15), frames).map(lambda t: bytes([t[0]]) + b"".join(
        bytes([ticks]) + len(f).to_bytes(2, "big") + f for ticks, f in t[1]))


INPUTS: dict[str, st.SearchStrategy[bytes]] = {
    "envelope": st.binary(max_size=2048) | mutated(SEEDS["envelope"])
    | envelope_bodies(bodies_of(SEEDS["envelope"])) | values.map(lambda v: EnvelopeCodec().encode(v)),
    "records": st.binary(max_size=2048) | mutated(SEEDS["records"]) | edited_bodies(SEEDS["records"])
    | values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    "topics": st.binary(max_size=300) | mutated(SEEDS["topics"]) | st.lists(
        st.sampled_from(["edgebus", "gw-1", "_sys", "+", "#", "", "metrics", "birth", "detections",
                         "cmd", "events", "state", "ota", "homeassistant", "_anomaly", "x" * 129, "a\x00b",
                         "$share"]),
        max_size=8).map(lambda levels: "/".join(levels).encode()),
    "twopc": st.binary(max_size=1024) | mutated(SEEDS["twopc"]) | edited_bodies(SEEDS["twopc"]),
    "coordination": st.binary(max_size=1024) | mutated(SEEDS["coordination"])
    | envelope_bodies(bodies_of(SEEDS["coordination"])),
    "audit": st.binary(max_size=1024) | mutated(SEEDS["audit"]),
    "ingest": st.binary(max_size=1024) | mutated(SEEDS["ingest"])
    | st.tuples(st.integers(0, 255), envelope_bodies(bodies_of(SEEDS["envelope"]))).map(
        lambda t: bytes([t[0]]) + t[1]),
    "pbft_wire": pbft_frames(),
    "pbft_replica": pbft_sequences() | mutated(SEEDS["pbft_replica"]),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_seeds_are_valid_inputs(name: str) -> None:
    for seed in SEEDS[name]:
        TARGETS[name](seed)


def fuzz(name: str) -> None:
    @FUZZ
    @given(INPUTS[name])
    def run(data: bytes) -> None:
        within_budget(TARGETS[name], data, cpu_s=CPU_S, peak_bytes=PEAK_BYTES)

    run()


def test_fuzz_envelope_decoder() -> None:
    fuzz("envelope")


def test_fuzz_record_decoders() -> None:
    fuzz("records")


def test_fuzz_topic_parser() -> None:
    fuzz("topics")


def test_fuzz_twopc_messages() -> None:
    fuzz("twopc")


def test_fuzz_coordination_wire() -> None:
    fuzz("coordination")


def test_fuzz_audit_records() -> None:
    fuzz("audit")


def test_fuzz_ingest() -> None:
    fuzz("ingest")


def test_fuzz_pbft_frame_decoder() -> None:
    fuzz("pbft_wire")


def test_fuzz_pbft_replica_and_client_handlers() -> None:
    fuzz("pbft_replica")


def test_a_bomb_is_over_the_budget_without_the_decoder_limits() -> None:
    """The budget check itself: a decoder without its object limit blows it (so it can fail)."""
    body = b"\xdd" + (4_000_000).to_bytes(4, "big") + b"\x90" * 4_000_000
    bomb = EnvelopeCodec(max_objects=10**9, compress_threshold=0).wrap(body)

    def unlimited(data: bytes) -> None:
        EnvelopeCodec(max_objects=10**9).decode(data)

    with pytest.raises(AssertionError, match="MiB"):
        within_budget(unlimited, bomb, cpu_s=60.0, peak_bytes=PEAK_BYTES)
    within_budget(TARGETS["envelope"], bomb, cpu_s=CPU_S, peak_bytes=PEAK_BYTES)


# -- what the fuzzing found (each failed before its fix) ---------------------------------------------------


@pytest.mark.parametrize("fields", [
    ["vote", 0, "n2", 3, 10, 2, False, False],  # a node id that is a number
    ["vote", "n1", "n2", True, 10, 2, False, False],  # a term that is a bool
    ["req", "c1", 1, "acquire", 4_000_000_000],  # bytes(4e9) would allocate 4 GB
    ["reply", 1, 2, "n1", 10**9],
    ["append", "n1", "n2", 3, 9, 2, [[3, 10, "command", 10**9, "c", 1, []]], 9],
    ["snapshot", "n1", "n2", 3, [5, 2, ["n1"], 10**9, []]],
])
def test_coordination_messages_with_fields_of_the_wrong_type_are_malformed(fields: list[Any]) -> None:
    from protocols.coordination import wire
    from schemas.errors import CodecError

    data = EnvelopeCodec().encode([wire.WIRE_VERSION, *fields])
    with pytest.raises(CodecError):
        within_budget(wire.decode, data, cpu_s=CPU_S, peak_bytes=PEAK_BYTES)


def test_a_twopc_message_with_a_nested_extra_survives_a_round_trip() -> None:
    from protocols.twopc.messages import Vote, decode_message, encode_message
    from schemas.record_base import record_to_body

    body = {**record_to_body(Vote("tx-1", "p1", True)), "z": {"k": 1}}  # a newer sender's extra field
    message = decode_message(msgpack.packb(body, use_bin_type=True))
    assert dict(message.extra["z"]) == {"k": 1}
    assert decode_message(encode_message(message)) == message
