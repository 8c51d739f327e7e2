"""A participant's durable record of one transaction, and its one binary encoding.

The participant's driver keeps these in its store (a file, a SQL table) and
hands them back to :class:`protocols.twopc.participant.Participant` after a
restart. Encoded as msgpack ``[1, tx_id, yes, reason, outcome|nil, prepared_ms,
decided_ms|nil]`` (1 = format version).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from protocols.twopc.messages import Outcome, check_id, check_reason
from schemas.errors import CodecError, TxError, UnsupportedVersion

__all__ = ["ParticipantRecord", "decode_participant_record", "encode_participant_record"]

FORMAT_VERSION = 1
_MAX_TIME = 2**63 - 1


def _time(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME:
        raise TxError(f"{where} must be an integer in 0..{_MAX_TIME}, not {value!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    """What a participant voted on ``tx_id`` and, once known, the decision it applied.

    ``yes`` with no ``outcome``: prepared and in doubt (blocked on the group,
    never on a single coordinator). A no vote is recorded with outcome ABORT:
    the participant aborted on its own, which presumed abort allows.
    """

    tx_id: str
    yes: bool
    reason: str
    outcome: Outcome | None
    prepared_ms: int
    decided_ms: int | None = None

    def __post_init__(self) -> None:
        check_id("participant record tx_id", self.tx_id)
        if not isinstance(self.yes, bool):
            raise TxError("participant record yes must be a bool")
        check_reason("participant record reason", self.reason)
        if self.outcome is not None:
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        if not self.yes and self.outcome is not Outcome.ABORT:
            raise TxError("a participant that voted no has aborted: its record must say so")
        _time("participant record prepared_ms", self.prepared_ms)
        if (self.decided_ms is None) != (self.outcome is None):
            raise TxError("participant record: decided_ms is set exactly when the outcome is")
        if self.decided_ms is not None:
            _time("participant record decided_ms", self.decided_ms)

    @property
    def in_doubt(self) -> bool:
        """Voted yes and does not know the decision: it must ask the group."""
        return self.yes and self.outcome is None


def encode_participant_record(record: ParticipantRecord) -> bytes:
    outcome = None if record.outcome is None else record.outcome.value
    return msgpack.packb([FORMAT_VERSION, record.tx_id, record.yes, record.reason, outcome,
                          record.prepared_ms, record.decided_ms], use_bin_type=True)


def decode_participant_record(data: bytes) -> ParticipantRecord:
    """Inverse of :func:`encode_participant_record`; a CodecError (never anything else) on bad input."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise TxError(f"participant record is not valid msgpack: {exc}") from exc
    if not isinstance(body, list) or len(body) != 7:
        raise TxError("a participant record must be a 7-item msgpack array")
    if body[0] != FORMAT_VERSION:
        raise UnsupportedVersion(f"participant record format {body[0]!r:.20} is not supported")
    _, tx_id, yes, reason, outcome, prepared_ms, decided_ms = body
    try:
        return ParticipantRecord(tx_id, yes, reason, None if outcome is None else Outcome(outcome),
                                 prepared_ms, decided_ms)
    except CodecError:
        raise
    except ValueError as exc:
        raise TxError(f"participant record: {exc}") from exc
