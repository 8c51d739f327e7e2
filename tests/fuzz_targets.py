"""Fuzz targets: each takes arbitrary bytes and fails (raises) only on a real defect.

Shared by the hypothesis tests (tests/test_fuzz_decoders.py) and the atheris
runs (tests/fuzz_atheris.py); the PBFT targets live in tests/fuzz_pbft.py. A
decoder may refuse its input with the error it documents (a CodecError, a
TopicError); anything else escaping it, or a decoded value that does not
survive its own encoder, is a defect. Seeds are valid inputs for the fuzzers
to mutate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from protocols.coordination import wire
from protocols.raft.messages import (
    AppendRequest,
    Entry,
    EntryKind,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
)
from protocols.twopc.messages import (
    BeginRequest,
    Decision,
    Outcome,
    Part,
    Prepare,
    TxMessage,
    Vote,
    decode_message,
    encode_message,
)
from schemas.audit import AuditKind, AuditRecord
from schemas.envelope import EnvelopeCodec, unpack_body
from schemas.errors import CodecError, TopicError
from schemas.messages import (
    Birth,
    Detection,
    DetectionsBatch,
    FrameDetections,
    MetricSample,
    MetricsBatch,
    Record,
    decode_record,
    encode_record,
    record_body_bytes,
)
from schemas.metrics import MetricColumns
from schemas.record_base import record_from_body
from schemas.topics import TopicTree, validate_publish_topic, validate_topic_filter
from tests import fuzz_pbft

__all__ = ["SEEDS", "TARGETS"]

CODEC = EnvelopeCodec()
TREE = TopicTree("edgebus")


def envelope(data: bytes) -> None:
    """The envelope decoder: an object or a CodecError, within its limits."""
    try:
        CODEC.decode(data)
    except CodecError:
        return


def records(data: bytes) -> None:
    """The record decoders on a msgpack body: the column path agrees with the record path, and a
    decoded record survives its encoder."""
    try:
        body = unpack_body(data)
    except CodecError:
        return
    columns = MetricColumns.from_body(body)  # never raises: None means "use the record path"
    try:
        record = record_from_body(body)
    except CodecError:
        assert columns is None, "the column path took a body the record path refuses"
        return
    if columns is not None:
        assert isinstance(record, MetricsBatch) and not record.extra
        assert columns.samples() == list(record.samples), "the two paths decode different samples"
        assert (columns.device, columns.epoch, columns.first_seq) == (record.device, record.epoch,
                                                                      record.first_seq)
    # Compared as bytes: a NaN in an extra field makes the records unequal to themselves.
    encoded = encode_record(record)
    assert encode_record(decode_record(encoded)) == encoded, "a decoded record does not survive a round trip"


def topics(data: bytes) -> None:
    """The topic parser and validators: a result or a TopicError; a parsed topic names what it parsed."""
    topic = data.decode("utf-8", "replace")
    for check in (validate_publish_topic, validate_topic_filter):
        with contextlib.suppress(TopicError):
            check(topic)
    try:
        parsed = TREE.parse(topic)
    except TopicError:
        return
    if parsed.device is not None:
        assert parsed.device in topic.split("/")


def twopc(data: bytes) -> None:
    """Two-phase commit messages: a message or a CodecError; a decoded one survives its encoder."""
    try:
        message = decode_message(data)
    except CodecError:
        return
    encoded = encode_message(message)
    assert encode_message(decode_message(encoded)) == encoded, "a message does not survive a round trip"


def coordination(data: bytes) -> None:
    """Coordination (Raft, locks, admin) wire messages: a well-typed object or a CodecError."""
    try:
        message = wire.decode(data)
    except CodecError:
        return
    check_fields(message)
    encoded = wire.encode(message)
    assert wire.encode(wire.decode(encoded)) == encoded, "a message does not survive a round trip"


_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "bytes": (bytes,),
                                      "float": (float, int), "str | None": (str, type(None)),
                                      "int | None": (int, type(None))}


def check_fields(obj: object) -> None:
    """Every field of a decoded dataclass has its annotated type (bool is not an int here)."""
    if isinstance(obj, tuple):
        for item in obj:
            check_fields(item)
        return
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        expected = _TYPES.get(str(f.type))
        if expected is not None:
            ok = isinstance(value, expected) and not (bool not in expected and isinstance(value, bool))
            assert ok, f"{type(obj).__name__}.{f.name} is {value!r:.60}, not {f.type}"
        check_fields(value)


#: Topics of the ingest target: the first input byte picks one (device and kind).
INGEST_KINDS = ("metrics", "birth", "status", "detections/door", "events/door", "metrics", "metrics", "birth")


class _Subscriber:
    """What Ingest needs of a session when messages are handed to it directly."""

    topics = TREE


_ingest: Any = None


def ingest(data: bytes) -> None:
    """The coordinator's ingest on one message: rows or dead letters, never an exception.

    Messages go straight to the decoder pass (``_process``), on this thread, so
    an exception reaches the fuzzer instead of ending a decoder thread.
    """
    global _ingest
    if _ingest is None:
        from coordinator.ingest import Ingest

        _ingest = Ingest(_Subscriber())  # type: ignore[arg-type]
    if not data:
        return
    from broker.router import ReceivedMessage

    topic = f"edgebus/gw-{data[0] % 4}/{INGEST_KINDS[data[0] // 4 % len(INGEST_KINDS)]}"
    _ingest._process([ReceivedMessage(topic, data[1:], 1, False)])


def audit(data: bytes) -> None:
    """Audit records (``_sys/audit``): a record or a CodecError; a decoded one survives its encoder."""
    try:
        record = AuditRecord.decode(data)
    except CodecError:
        return
    assert AuditRecord.decode(record.encode()) == record


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": envelope, "records": records, "topics": topics, "twopc": twopc, "coordination": coordination,
    "ingest": ingest, "audit": audit,
    "pbft_wire": fuzz_pbft.pbft_wire, "pbft_replica": fuzz_pbft.pbft_replica,
}


def _seeds() -> dict[str, list[bytes]]:
    t = 1_763_900_000_000
    metric = MetricsBatch(device="gw-1", epoch=3, first_seq=10, samples=(
        MetricSample(t, "temp_c", 48.3), MetricSample(t + 5, "load1", 2),
        MetricSample(t + 9, "temp_c", 48.5)))
    detections = DetectionsBatch(device="gw-1", camera="door", epoch=3, first_seq=0, frames=(
        FrameDetections(t, (Detection("person", 0.9, (0.1, 0.2, 0.3, 0.4), 7),)),
        FrameDetections(t + 40, ())))
    birth = Birth(device="gw-1", epoch=3, agent_version="1.2", time_ms=t, capabilities=("camera",),
                  versions={"python": "3.11"}, groups=("lobby",))
    records_: list[Record] = [metric, detections, birth]
    tx: list[TxMessage] = [
        BeginRequest("tx-1", "c1", 5000, (Part("p1", b"op"), Part("p2"))),
        Prepare("tx-1", "p1", ("p1", "p2"), b"op", t), Vote("tx-1", "p1", True),
        Decision("tx-1", Outcome.COMMIT)]
    coord: list[wire.WireObject] = [
        VoteRequest("n1", "n2", 3, 10, 2),
        AppendRequest("n1", "n2", 3, 9, 2, (Entry(3, 10, EntryKind.COMMAND, b"x", "c", 1),), 9),
        SnapshotRequest("n1", "n2", 3, Snapshot(5, 2, ("n1", "n2"), b"state", (("c", 1, b"r"),))),
        wire.ClientRequest("c1", 1, "acquire", b"lock"), wire.AdminRequest("op", 1, "add", "n3"),
        wire.MessageBatch((VoteRequest("n1", "n2", 3, 10, 2), TimeoutNow("n1", "n2", 3)))]
    return {
        "envelope": [encode_record(r) for r in records_],
        "records": [record_body_bytes(r) for r in records_],
        "topics": [b"edgebus/gw-1/metrics", b"edgebus/gw-1/detections/door", b"edgebus/_sys/raft/g/n1",
                   b"edgebus/gw-1/cmd/ota/offer", b"homeassistant/sensor/gw-1/temp/config"],
        "twopc": [encode_message(m) for m in tx],
        "audit": [AuditRecord("9f2c41d07a3be855", t, AuditKind.ACL_DENIED, "gw-1", "publish", "broker",
                              "topic edgebus/gw-2/metrics").encode()],
        "coordination": [wire.encode(m) for m in coord],
        # gw-1: metrics (1), birth (5), status (9), detections (13), events (17)
        "ingest": [bytes([1]) + encode_record(metric), bytes([5]) + encode_record(birth),
                   bytes([9]) + b"online", bytes([13]) + encode_record(detections),
                   bytes([17]) + b'{"type":"start","camera":"door","track_id":7,"label":"person"}'],
    }


SEEDS = {**_seeds(), **fuzz_pbft.SEEDS}


def within_budget(target: Callable[[bytes], None], data: bytes, *, cpu_s: float, peak_bytes: int) -> None:
    """Run ``target`` on ``data`` and fail if it takes more CPU time or memory than allowed."""
    import tracemalloc

    tracemalloc.start()
    start = time.process_time()
    try:
        target(data)
        used = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert used <= cpu_s, f"{target.__name__} took {used:.2f} s of CPU on {len(data)} bytes"
    assert peak <= peak_bytes, f"{target.__name__} took {peak / 2**20:.1f} MiB on {len(data)} bytes"
