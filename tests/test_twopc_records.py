"""The two-phase commit wire records, log commands and participant records: one codec each, strict."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.twopc import (
    Ack,
    Begin,
    BeginRequest,
    Decide,
    Decision,
    End,
    Outcome,
    Part,
    ParticipantRecord,
    Prepare,
    Resolve,
    StatusQuery,
    StatusReply,
    TxMessage,
    TxState,
    Vote,
    decode_entry,
    decode_message,
    decode_participant_record,
    encode_entry,
    encode_message,
    encode_participant_record,
)
from protocols.twopc.commands import decode_command, encode_command
from protocols.twopc.messages import TX_MESSAGE_TYPES
from schemas.errors import CodecError, TxError, UnsupportedVersion
from schemas.messages import decode_record, encode_record

PARTS = (Part("agent-a", b"release cam7"), Part("agent-b", b"take cam7"))
MESSAGES: list[TxMessage] = [
    BeginRequest("tx1", "client-1", 5_000, PARTS),
    Prepare("tx1", "agent-a", ("agent-a", "agent-b"), b"release cam7", 12_345),
    Vote("tx1", "agent-a", True),
    Vote("tx1", "agent-b", False, "camera 7 is busy"),
    Decision("tx1", Outcome.COMMIT),
    Decision("tx1", Outcome.ABORT, "timeout"),
    Ack("tx1", "agent-a", Outcome.COMMIT),
    StatusQuery("tx1", "agent-a"),
    StatusReply("tx1", TxState.PENDING),
    StatusReply("tx1", TxState.ABORT, "never begun"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE)
def test_every_message_round_trips_bare_and_in_an_envelope(message: TxMessage) -> None:
    assert decode_message(encode_message(message)) == message
    assert decode_record(encode_record(message)) == message
    assert message.to_json()["type"] == message.TYPE


def test_unknown_fields_are_kept_and_written_back() -> None:
    body = msgpack.unpackb(encode_message(Vote("tx1", "a", True)))
    body["priority"] = 3
    vote = decode_message(msgpack.packb(body))
    assert (vote.tx_id, vote.participant, vote.yes) == ("tx1", "a", True)
    assert dict(vote.extra) == {"priority": 3}
    assert msgpack.unpackb(encode_message(vote))["priority"] == 3


def test_a_newer_version_is_refused() -> None:
    body = msgpack.unpackb(encode_message(Vote("tx1", "a", True)))
    body["v"] = 2
    with pytest.raises(UnsupportedVersion):
        decode_message(msgpack.packb(body))


@pytest.mark.parametrize("mutate", [
    lambda b: b.pop("tx"),
    lambda b: b.update(tx=""),
    lambda b: b.update(tx="x" * 200),
    lambda b: b.update(yes="yes"),
    lambda b: b.update(participant=7),
    lambda b: b.update(type="tx_nonsense"),
])
def test_malformed_messages_are_codec_errors(mutate: object) -> None:
    body = msgpack.unpackb(encode_message(Vote("tx1", "a", True)))
    mutate(body)  # type: ignore[operator]
    with pytest.raises(CodecError):
        decode_message(msgpack.packb(body))


@given(st.binary(max_size=64))
def test_garbage_is_only_ever_a_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_message(data)


def test_records_validate_themselves() -> None:
    with pytest.raises(TxError):
        Prepare("tx1", "c", ("a", "b"), b"", 1)  # addressed to a non-participant
    with pytest.raises(TxError):
        BeginRequest("tx1", "c", 1000, (Part("a"), Part("a")))  # a participant twice
    with pytest.raises(TxError):
        BeginRequest("tx1", "c", 0, PARTS)  # no time at all
    with pytest.raises(TxError):
        BeginRequest("tx1", "c", 1000, ())
    with pytest.raises(TxError):
        Part("a", b"x" * 70_000)
    with pytest.raises(TxError):
        Decision("tx1", "maybe")  # type: ignore[arg-type]
    with pytest.raises(TxError):
        StatusReply("tx1", "unknown")  # type: ignore[arg-type]
    assert StatusReply("tx1", TxState.COMMIT).outcome is Outcome.COMMIT
    assert StatusReply("tx1", TxState.PENDING).outcome is None


@pytest.mark.parametrize("command", [
    Begin("tx1", "client", 1_000, PARTS),
    Decide("tx1", Outcome.COMMIT, "", ("agent-a", "agent-b")),
    Decide("tx1", Outcome.ABORT, "timeout"),
    End("tx1", ("agent-a", "agent-b")),
    Resolve("tx1"),
], ids=lambda c: c.KIND)
def test_commands_and_entries_round_trip(command: object) -> None:
    assert decode_command(encode_command(command)) == command  # type: ignore[arg-type]
    assert decode_entry(encode_entry(42, command)) == (42, command)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [
    b"", b"\xc1", msgpack.packb([2, 0, ["resolve", "t"]]), msgpack.packb([1, -1, ["resolve", "t"]]),
    msgpack.packb([1, 0, ["launch", "t"]]), msgpack.packb([1, 0, ["resolve"]]),
    msgpack.packb([1, 0, ["begin", "t", "c", 10, [["a"]]]]), msgpack.packb([1, 0, ["end", "t", "a"]]),
])
def test_malformed_entries_are_codec_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_entry(data)


def test_participant_records_round_trip_and_refuse_nonsense() -> None:
    for rec in (ParticipantRecord("tx1", True, "", None, 5),
                ParticipantRecord("tx1", True, "", Outcome.COMMIT, 5, 9),
                ParticipantRecord("tx1", False, "busy", Outcome.ABORT, 5, 5)):
        assert decode_participant_record(encode_participant_record(rec)) == rec
    assert ParticipantRecord("tx1", True, "", None, 5).in_doubt
    with pytest.raises(TxError):
        ParticipantRecord("tx1", False, "busy", Outcome.COMMIT, 5, 5)  # a no vote is an abort
    with pytest.raises(TxError):
        ParticipantRecord("tx1", True, "", Outcome.COMMIT, 5)  # decided without a time
    with pytest.raises(UnsupportedVersion):
        decode_participant_record(msgpack.packb([2, "tx1", True, "", None, 5, None]))
    with pytest.raises(CodecError):
        decode_participant_record(msgpack.packb([1, "tx1", True, "", "perhaps", 5, 6]))
    with pytest.raises(CodecError):
        decode_participant_record(b"\x93")


def test_format_md_documents_every_transaction_record_and_its_keys() -> None:
    """schemas/FORMAT.md's table is the contract: one row per record type, naming exactly its wire keys."""
    text = (Path(__file__).resolve().parents[1] / "schemas" / "FORMAT.md").read_text()
    section = text.split("## Two-phase commit", 1)[1].split("\n## ", 1)[0]
    row = re.compile(r"^\| `(tx_\w+)` \| [^|]+ \| (.+) \|$", re.M)
    rows = {m.group(1): m.group(2) for m in row.finditer(section)}
    assert set(rows) == {t.TYPE for t in TX_MESSAGE_TYPES}
    for record in TX_MESSAGE_TYPES:
        documented = set(re.findall(r"(?:^|, )`(\w+)`", rows[record.TYPE]))
        assert documented == set(record.WIRE_KEYS), record.TYPE
