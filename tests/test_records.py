"""Wire records (schemas/messages.py and the record modules) and the FORMAT.md contract."""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import json
import math
import re
import struct
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.float_columns
import schemas.messages
import schemas.metrics
from schemas.birth import Capacity
from schemas.dictionaries.train import GATEWAY_METRICS, SyntheticFleet
from schemas.envelope import EnvelopeCodec
from schemas.errors import CodecError, PayloadTooLarge, UnsupportedVersion
from schemas.float_columns import decode_float_column, encode_float_column
from schemas.messages import (
    DEFAULT_CODEC,
    Birth,
    Command,
    Detection,
    DetectionsBatch,
    FrameDetections,
    MetricSample,
    MetricsBatch,
    Record,
    decode_record,
    encode_record,
    record_body_bytes,
    record_to_json,
)

FORMAT_MD = Path(__file__).resolve().parents[1] / "schemas" / "FORMAT.md"

# -- strategies ----------------------------------------------------------------------------

device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
metric_names = st.sampled_from(["cpu_percent", "temp_c", "load1", "mem_used_bytes", "x"]) | \
    st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
times = st.integers(0, 2**62)
numbers = (st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([48.3, 0.52, 3.0, -0.0, 0.1 + 0.2, 1e-300, 2.0**53, 123456.789]))
unit_floats = (st.floats(0, 1) | st.floats(0, 1, width=32)
               | st.sampled_from([0.0, 0.5, 0.25, 0.125, 1.0, 0.1]))
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=12) | st.binary(max_size=12))
free_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6) | st.integers(0, 9),
                                                        c, max_size=4),
    max_leaves=12)


def float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def extras(record: type[Record]) -> st.SearchStrategy[dict[str, Any]]:
    reserved = {*record.WIRE_KEYS, "type", "v"}
    return st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in reserved),
                           free_values, max_size=3)


metric_samples = st.builds(MetricSample, times, metric_names, numbers)
metrics_batches = st.builds(
    MetricsBatch, device=device_ids, epoch=st.integers(0, 2**63 - 1),
    first_seq=st.integers(0, 2**40), samples=st.lists(metric_samples, max_size=30).map(tuple),
    extra=extras(MetricsBatch))


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, x2 = sorted((draw(unit_floats), draw(unit_floats)))
    y1, y2 = sorted((draw(unit_floats), draw(unit_floats)))
    return (x1, y1, x2, y2)


detections = st.builds(Detection, st.sampled_from(["person", "car", "traffic light"]),
                       unit_floats, boxes(), st.none() | st.integers(0, 2**63 - 1))
frames = st.builds(FrameDetections, times, st.lists(detections, max_size=4).map(tuple))
detections_batches = st.builds(
    DetectionsBatch, device=device_ids, camera=st.sampled_from(["front", "cam0"]),
    epoch=st.integers(0, 2**40), first_seq=st.integers(0, 2**40),
    frames=st.lists(frames, max_size=6).map(tuple), extra=extras(DetectionsBatch))
births = st.builds(
    Birth, device=device_ids, epoch=st.integers(0, 2**63 - 1), agent_version=st.just("0.1.0"),
    time_ms=times, capabilities=st.lists(st.sampled_from(["camera", "ota"]), max_size=2)
    .map(tuple), versions=st.dictionaries(st.sampled_from(["python", "os"]),
                                          st.text(alphabet="abc. 0123", max_size=10)),
    extra=extras(Birth))
commands = st.builds(
    Command, device=device_ids, name=st.sampled_from(["assign", "ota/chunk", "rebirth"]),
    command_id=st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True), time_ms=times,
    args=st.dictionaries(st.text(max_size=8), free_values, max_size=4),
    reply_to=st.none() | st.just("edgebus/_sys/cmd/acks"), extra=extras(Command))
records = metrics_batches | detections_batches | births | commands


def exact(record: Record) -> Any:
    """What equality would miss: float signs and int-versus-float, via repr of the JSON view."""
    return repr(record_to_json(record))


def test_doctests() -> None:
    for module in (schemas.messages, schemas.metrics, schemas.float_columns):
        assert doctest.testmod(module).failed == 0


# -- round trips ---------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_every_record_round_trips_exactly(record: Record) -> None:
    data = encode_record(record)
    decoded = decode_record(data)
    assert decoded == record
    assert type(decoded) is type(record)
    assert exact(decoded) == exact(record)
    assert encode_record(decoded) == data
    json.dumps(record_to_json(decoded))


@given(st.lists(metric_samples, max_size=20))
def test_metric_values_keep_their_type_and_every_bit(samples: list[MetricSample]) -> None:
    batch = MetricsBatch(device="d", epoch=0, first_seq=0, samples=samples)
    decoded = decode_record(encode_record(batch))
    assert isinstance(decoded, MetricsBatch)
    for before, after in zip(batch.samples, decoded.samples, strict=True):
        assert type(before.value) is type(after.value)
        if isinstance(before.value, float):
            assert math.copysign(1, before.value) == math.copysign(1, after.value)
            assert before.value.hex() == after.value.hex()  # type: ignore[union-attr]
        else:
            assert before.value == after.value


def test_short_decimals_travel_as_scaled_integers() -> None:
    batch = MetricsBatch(device="d", epoch=0, first_seq=0, samples=[
        MetricSample(1000, "temp_c", 48.3), MetricSample(1000, "load1", 0.52),
        MetricSample(2000, "temp_c", 48.25), MetricSample(2000, "n", 7),
        MetricSample(3000, "odd", 0.1 + 0.2), MetricSample(3000, "mixed", 1),
        MetricSample(4000, "mixed", 1.5), MetricSample(4000, "neg", -0.0)])
    body = msgpack.unpackb(record_body_bytes(batch))
    assert body["names"] == ["temp_c", "load1", "n", "odd", "mixed", "neg"]
    # 0.1 + 0.2 needs 17 digits: its mantissa would exceed 2**53, so it goes as a float.
    assert body["scale"] == [2, 2, None, None, None, None]
    assert body["vals"][:4] == [4830, 52, 4825, 7]
    assert body["t0"] == 1000 and body["dt"] == [0, 0, 1000, 0, 1000, 0, 1000, 0]
    assert exact(decode_record(encode_record(batch))) == exact(batch)


def test_unknown_fields_are_kept_and_re_emitted() -> None:
    batch = MetricsBatch(device="d", epoch=1, first_seq=5,
                         samples=[MetricSample(1, "temp_c", 20.5)])
    body = msgpack.unpackb(record_body_bytes(batch))
    body["site"] = {"building": "B", "floors": [1, 2]}
    body["fw"] = b"\x01\x02"
    decoded = decode_record(DEFAULT_CODEC.encode(body))
    assert decoded.extra == {"site": {"building": "B", "floors": (1, 2)}, "fw": b"\x01\x02"}
    assert isinstance(decoded.extra, MappingProxyType)
    assert DEFAULT_CODEC.decode(encode_record(decoded)) == body
    assert record_to_json(decoded)["extra"] == {"site": {"building": "B", "floors": [1, 2]},
                                                "fw": "0102"}


def test_records_are_frozen_and_hashable() -> None:
    birth = Birth(device="d", epoch=1, agent_version="1", time_ms=0, versions={"os": "x"},
                  capabilities=["ota"], extra={"k": [1]})
    assert birth.capabilities == ("ota",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        birth.epoch = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        birth.versions["os"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        birth.extra["k"] = 2  # type: ignore[index]
    same = Birth(device="d", epoch=1, agent_version="1", time_ms=0, versions={"os": "x"},
                 capabilities=("ota",), extra={"k": (1,)})
    assert birth == same and hash(birth) == hash(same)
    batch = SyntheticFleet(1).detections_batch()
    assert hash(batch) == hash(decode_record(encode_record(batch)))


def test_metrics_batch_numbering() -> None:
    batch = MetricsBatch(device="d", epoch=3, first_seq=10,
                         samples=[MetricSample(1, "a", 1), MetricSample(2, "b", 2.5)])
    assert [seq for seq, _ in batch.numbered()] == [10, 11]
    assert batch.seq_of(1) == 11 and batch.next_seq == 12
    with pytest.raises(IndexError):
        batch.seq_of(2)
    view = record_to_json(batch)
    assert view["samples"][1] == {"seq": 11, "time_ms": 2, "name": "b", "value": 2.5}


def test_empty_batches_are_allowed() -> None:
    for record in (MetricsBatch(device="d", epoch=0, first_seq=7, samples=()),
                   DetectionsBatch(device="d", camera="c", epoch=0, first_seq=7, frames=())):
        assert decode_record(encode_record(record)) == record


def test_detections_round_trip_and_json_view() -> None:
    batch = DetectionsBatch(device="cam-1", camera="front", epoch=2, first_seq=100, frames=[
        FrameDetections(5000, [Detection("person", 0.875, (0.1, 0.2, 0.3, 0.4), 7),
                               Detection("car", 1, [0, 0, 1, 1])]),
        FrameDetections(5066)])
    assert batch.frames[0].detections[1].box == (0.0, 0.0, 1.0, 1.0)
    assert decode_record(encode_record(batch)) == batch
    view = record_to_json(batch)
    assert view["frames"][1] == {"seq": 101, "time_ms": 5066, "detections": []}
    assert view["frames"][0]["detections"][0] == {
        "label": "person", "confidence": 0.875, "box": [0.1, 0.2, 0.3, 0.4], "track_id": 7}


@pytest.mark.parametrize(("values", "encoding"), [
    ([0.5, 0.25, 1.0], 0),
    ([0.1, 0.22, 0.333], 0),
    ([0.8734000325202942, 0.1234567890123], 2),
    ([float32(0.8734), float32(0.6123)], 1),
    ([float32(0.8734), 0.5], 1),
    ([], 1),
])
def test_float_columns_pick_the_smallest_exact_form(values: list[float], encoding: int) -> None:
    column = encode_float_column(values)
    assert column[0] == encoding
    assert decode_float_column(column, len(values), "c") == values


@given(st.lists(st.floats(allow_nan=False) | st.floats(width=32, allow_nan=False), max_size=12))
def test_float_columns_are_lossless(values: list[float]) -> None:
    decoded = decode_float_column(encode_float_column(values), len(values), "c")
    assert [v.hex() for v in decoded] == [v.hex() for v in values]


@pytest.mark.parametrize("column", [
    None, [], [3, b""], [0, 1], [0, 23, [1]], [0, 1, [2**60]], [0, 1, [1.5]], [1, b"abc"],
    [1, [1.0]], [2, b"\x00" * 4], ["1", b""], [0, 1, [1, 2]],
])
def test_malformed_float_columns_are_codec_errors(column: object) -> None:
    with pytest.raises(CodecError, match="col"):
        decode_float_column(column, 1, "col")


# -- validation at construction ------------------------------------------------------------


@pytest.mark.parametrize(("make", "field"), [
    (lambda: MetricSample(1, "m", True), "value"),
    (lambda: MetricSample(1, "m", "1"), "value"),
    (lambda: MetricSample(1, "m", float("nan")), "finite"),
    (lambda: MetricSample(1, "m", float("inf")), "finite"),
    (lambda: MetricSample(1, "m", 2**63), "64-bit"),
    (lambda: MetricSample(-1, "m", 1), "time_ms"),
    (lambda: MetricSample(1.5, "m", 1), "time_ms"),
    (lambda: MetricSample(1, "bad name", 1), "name"),
    (lambda: MetricSample(1, "_m", 1), "name"),
    (lambda: MetricsBatch(device="a/b", epoch=0, first_seq=0, samples=()), "device"),
    (lambda: MetricsBatch(device="d", epoch=-1, first_seq=0, samples=()), "epoch"),
    (lambda: MetricsBatch(device="d", epoch=0, first_seq="0", samples=()), "first_seq"),
    (lambda: MetricsBatch(device="d", epoch=0, first_seq=0, samples=[(1, "m", 1)]), "samples"),
    (lambda: MetricsBatch(device="d", epoch=0, first_seq=0, samples=(), extra={"seq": 1}),
     "extra"),
    (lambda: MetricsBatch(device="d", epoch=0, first_seq=0, samples=(), extra={1: 1}), "extra"),
    (lambda: MetricsBatch(device="d", epoch=0, first_seq=0, samples=(),
                          extra={"x": object()}), "extra"),
    (lambda: Detection("person", 1.5, (0, 0, 1, 1)), "confidence"),
    (lambda: Detection("person", 0.5, (0.5, 0, 0.4, 1)), "x1 <= x2"),
    (lambda: Detection("person", 0.5, (0, 0, 1)), "box"),
    (lambda: Detection("person", 0.5, (0, 0, 1, 2)), r"box\[3\]"),
    (lambda: Detection("", 0.5, (0, 0, 1, 1)), "label"),
    (lambda: Detection("a\nb", 0.5, (0, 0, 1, 1)), "label"),
    (lambda: Detection("person", 0.5, (0, 0, 1, 1), -1), "track_id"),
    (lambda: FrameDetections(0, [None]), "detections"),
    (lambda: DetectionsBatch(device="d", camera="a b", epoch=0, first_seq=0, frames=()),
     "camera"),
    (lambda: Birth(device="d", epoch=0, agent_version="", time_ms=0), "agent_version"),
    (lambda: Birth(device="d", epoch=0, agent_version="1", time_ms=0, versions={"os": 1}),
     "versions"),
    (lambda: Birth(device="d", epoch=0, agent_version="1", time_ms=0, capabilities="ota"),
     "capabilities"),
    (lambda: Command(device="d", name="ota/+", command_id="1", time_ms=0), "command name"),
    (lambda: Command(device="d", name="a", command_id="", time_ms=0), "command_id"),
    (lambda: Command(device="d", name="a", command_id="1", time_ms=0, reply_to="a/#"),
     "reply_to"),
    (lambda: Command(device="d", name="a", command_id="1", time_ms=0, args={"a": {1, 2}}),
     "args"),
    (lambda: Command(device="d", name="a", command_id="1", time_ms=0, args={"a": 2**64}),
     "args"),
])
def test_invalid_fields_are_codec_errors_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(CodecError, match=field):
        make()


def test_number_subclasses_are_normalised() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Reading(float):
        pass

    assert type(MetricSample(1, "m", Level.HIGH).value) is int
    assert type(MetricSample(1, "m", Reading(2.5)).value) is float


def test_deeply_nested_extras_are_refused() -> None:
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(CodecError, match="nested"):
        Command(device="d", name="a", command_id="1", time_ms=0, args={"a": deep})


# -- refusing bodies -----------------------------------------------------------------------


def body_of(record: Record) -> dict[str, Any]:
    body: dict[str, Any] = msgpack.unpackb(record_body_bytes(record))
    return body


SAMPLE_BATCH = MetricsBatch(device="gw-1", epoch=1, first_seq=0,
                            samples=[MetricSample(1000, "temp_c", 48.5)])


def test_newer_versions_are_refused_with_a_clear_message() -> None:
    body = body_of(SAMPLE_BATCH) | {"v": 3}
    with pytest.raises(UnsupportedVersion, match=r"metrics record version 3 is newer than this "
                                                 r"edgebus understands \(max 1\); upgrade the "
                                                 "coordinator"):
        decode_record(DEFAULT_CODEC.encode(body))
    command = Command(device="d", name="a", command_id="1", time_ms=0)
    with pytest.raises(UnsupportedVersion, match="upgrade the agent"):
        decode_record(DEFAULT_CODEC.encode(body_of(command) | {"v": 2}))


@pytest.mark.parametrize(("body", "error", "message"), [
    ([1, 2], CodecError, "msgpack map"),
    ({"v": 1}, CodecError, "'type'"),
    ({"type": 5, "v": 1}, CodecError, "'type'"),
    ({"type": "telemetry", "v": 1}, UnsupportedVersion, "unknown record type 'telemetry'"),
    (body_of(SAMPLE_BATCH) | {"v": 0}, CodecError, "'v'"),
    (body_of(SAMPLE_BATCH) | {"v": "1"}, CodecError, "'v'"),
    ({k: v for k, v in body_of(SAMPLE_BATCH).items() if k != "epoch"}, CodecError,
     "'epoch' is missing"),
    (body_of(SAMPLE_BATCH) | {"epoch": "x"}, CodecError, "'epoch'"),
    (body_of(SAMPLE_BATCH) | {"epoch": -1}, CodecError, "'epoch'"),
    (body_of(SAMPLE_BATCH) | {"device": "a/b"}, CodecError, "device"),
    (body_of(SAMPLE_BATCH) | {"idx": [1]}, CodecError, "'idx'"),
    (body_of(SAMPLE_BATCH) | {"idx": [-1]}, CodecError, "'idx'"),
    (body_of(SAMPLE_BATCH) | {"dt": [0, 0]}, CodecError, "'dt'"),
    (body_of(SAMPLE_BATCH) | {"vals": ["x"]}, CodecError, "'vals'"),
    (body_of(SAMPLE_BATCH) | {"vals": [1.5]}, CodecError, "'vals'"),
    (body_of(SAMPLE_BATCH) | {"scale": [30]}, CodecError, "'scale'"),
    (body_of(SAMPLE_BATCH) | {"scale": []}, CodecError, "'scale'"),
    (body_of(SAMPLE_BATCH) | {"names": ["bad name"]}, CodecError, "name"),
    (body_of(SAMPLE_BATCH) | {"t0": -5000}, CodecError, "'t0'"),
    (body_of(SAMPLE_BATCH) | {"dt": [-5000]}, CodecError, "time_ms"),
    (body_of(SAMPLE_BATCH) | {1: "int key"}, CodecError, "keys must be strings"),
])
def test_bad_bodies_are_refused(body: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_record(DEFAULT_CODEC.encode(body))


def test_records_obey_the_codecs_limits() -> None:
    small = EnvelopeCodec(max_payload_bytes=200)
    batch = SyntheticFleet(3).metrics_batch(metrics=GATEWAY_METRICS, ticks=30)
    with pytest.raises(PayloadTooLarge):
        encode_record(batch, small)
    with pytest.raises(PayloadTooLarge):
        decode_record(encode_record(batch), small)


def test_encode_record_needs_a_record() -> None:
    with pytest.raises(CodecError, match="needs a Record"):
        encode_record({"type": "metrics"})  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_arbitrary_payloads_raise_only_codec_errors(data: bytes) -> None:
    for payload in (data, b"EB\x01\x00\x00\x00\x00\x00" + data):
        with contextlib.suppress(CodecError):
            decode_record(payload)


FLEET = SyntheticFleet(99)
VALID_BODIES = [body_of(FLEET.metrics_batch()), body_of(FLEET.detections_batch(frames=3)),
                body_of(FLEET.birth()), body_of(FLEET.command())]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_BODIES), st.data())
def test_bodies_with_a_field_replaced_raise_only_codec_errors(body: dict[str, Any],
                                                              data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(body)))
    changed = dict(body)
    if data.draw(st.booleans()):
        changed[key] = data.draw(free_values)
    else:
        del changed[key]
    try:
        record = decode_record(DEFAULT_CODEC.encode(changed))
    except CodecError:
        return
    assert decode_record(encode_record(record)) == record


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([encode_record(SyntheticFleet(5).metrics_batch(ticks=5)),
                        encode_record(SyntheticFleet(6).detections_batch(frames=5))]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_record_envelopes_raise_only_codec_errors(
        data: bytes, changes: list[tuple[int, int]]) -> None:
    corrupted = bytearray(data)
    for at, value in changes:
        corrupted[at % len(corrupted)] = value
    with contextlib.suppress(CodecError):
        decode_record(bytes(corrupted))


# -- compactness (sizes are deterministic, so this is behaviour, not timing) ----------------


def compact_json(batch: MetricsBatch) -> bytes:
    return json.dumps({"device": batch.device, "epoch": batch.epoch,
                       "samples": [{"seq": seq, "ts": s.time_ms, "metric": s.name,
                                    "value": s.value} for seq, s in batch.numbered()]},
                      separators=(",", ":")).encode()


def test_a_typical_batch_is_at_least_70_percent_smaller_than_compact_json() -> None:
    fleet = SyntheticFleet(2024)
    for _ in range(5):
        batch = fleet.metrics_batch(metrics=GATEWAY_METRICS, ticks=5, interval_ms=1000)
        assert len(batch.samples) == 60
        assert len(encode_record(batch)) <= 0.3 * len(compact_json(batch))


# -- FORMAT.md cannot rot ------------------------------------------------------------------


def fenced(info: str) -> str:
    match = re.search(rf"```{re.escape(info)}\n(.*?)```", FORMAT_MD.read_text(), re.S)
    assert match, f"FORMAT.md has no ```{info} block"
    return match.group(1)


def documented_example() -> bytes:
    namespace: dict[str, Any] = {}
    exec(fenced("python example-record"), namespace)
    data: bytes = namespace["example"]
    return data


def test_format_md_hex_dump_is_what_the_code_produces() -> None:
    lines = fenced("text example-hex").splitlines()
    dumped = bytes.fromhex("".join("".join(line.split()[1:]) for line in lines))
    assert [int(line.split()[0], 16) for line in lines] == list(range(0, 16 * len(lines), 16))
    assert dumped == documented_example()


def test_format_md_body_and_sizes_are_what_the_code_produces() -> None:
    example = documented_example()
    body = DEFAULT_CODEC.decode(example)
    assert json.loads(fenced("json")) == body
    text = " ".join(FORMAT_MD.read_text().split())
    record = decode_record(example)
    assert isinstance(record, MetricsBatch)
    assert f"The envelope is {len(example)} bytes" in text
    assert f"same six samples is {len(compact_json(record))} bytes" in text
    assert f"this {len(DEFAULT_CODEC.unwrap(example))}-byte msgpack map" in text


def test_format_md_decoder_snippet_decodes_the_example() -> None:
    namespace: dict[str, Any] = {"__name__": "format_md_snippet"}
    exec(fenced("python example-decoder"), namespace)
    dictionary = (FORMAT_MD.parent / "dictionaries" / "1.zdict").read_bytes()
    example = documented_example()
    body = namespace["decode_envelope"](example, {1: dictionary})
    assert body == DEFAULT_CODEC.decode(example)
    record = decode_record(example)
    assert isinstance(record, MetricsBatch)
    expected = [(seq, s.time_ms, s.name, s.value) for seq, s in record.numbered()]
    assert list(namespace["metric_samples"](body)) == expected
    # The snippet also reads uncompressed envelopes and plain zstd ones.
    for codec in (EnvelopeCodec(compress_threshold=10**6), EnvelopeCodec(dictionary_id=0)):
        assert namespace["decode_envelope"](encode_record(record, codec), {}) == body


def test_a_birth_carries_the_measured_capacity_and_refuses_a_bad_one() -> None:
    cap = Capacity(4, 3800, ("CUDAExecutionProvider",), {"ssdlite": 41.5}, {"npu_tops": 13})
    birth = Birth(device="gw-1", epoch=1, agent_version="1", time_ms=5, capacity=cap)
    back = decode_record(encode_record(birth))
    assert isinstance(back, Birth) and back.capacity == cap
    assert back.capacity is not None and back.capacity.extra == {"npu_tops": 13}
    assert back.to_json()["capacity"]["detector_fps"] == {"ssdlite": 41.5}
    assert "capacity" not in Birth(device="gw-1", epoch=1, agent_version="1", time_ms=5).to_wire()
    for bad, why in (({"cores": 0, "memory_mb": 1}, "cores"), ({"memory_mb": 1}, "needs cores"),
                     ({"cores": 2, "memory_mb": 1, "detector_fps": {"ssdlite": float("nan")}},
                      "detector_fps"),
                     ({"cores": 2, "memory_mb": 1, "accelerators": "gpu"}, "accelerators")):
        with pytest.raises(CodecError, match=why):
            Capacity.from_wire(bad)
