"""What the manager and the participant ask their driver to do, in order.

``step``-style methods return a list of effects; the driver carries them out
in list order, and a :class:`Persist` (or :class:`Delete`) must be durable
(fsynced) before any effect after it in the same list, or in a later list, is
carried out. That order is the protocol's safety: a participant's yes vote
follows the durable prepared record, a decision follows its committed log
entry (the manager only reads decisions from the applied table, so that order
is structural).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.twopc.commands import TxCommand
from protocols.twopc.messages import Outcome, TxMessage
from protocols.twopc.records import ParticipantRecord

__all__ = [
    "ApplyOutcome",
    "Delete",
    "Effect",
    "InputError",
    "Persist",
    "PrepareResource",
    "Propose",
    "Send",
    "TxDecided",
    "TxEnded",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Publish ``message`` to ``to``: a participant id, a client id, or the group id (its tx topic)."""

    to: str
    message: TxMessage


@dataclass(frozen=True, slots=True)
class Propose:
    """Manager: stamp ``command`` with the leader's time and propose it to the group's Raft log.

    A proposal may be lost (leadership lost, entry truncated); the manager
    proposes again after ``ManagerConfig.propose_retry_ms`` until it sees the
    entry applied, and every command is idempotent.
    """

    command: TxCommand


@dataclass(frozen=True, slots=True)
class PrepareResource:
    """Participant: prepare ``payload`` durably in the resource (take locks, PREPARE TRANSACTION, ...).

    Always answer, later, with ``Participant.resource_prepared(tx_id, ok, reason, now)``: a
    resource that cannot prepare in time answers ``ok=False`` (the participant then votes no).
    """

    tx_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """Participant: commit or roll back the prepared work of ``tx_id`` in the resource.

    May be repeated after a crash (the record of the decision is written after
    it): the resource must treat a repeat as done, and a rollback of work it
    does not hold as done.
    """

    tx_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Persist:
    """Participant: write (replace) ``record`` in the durable store; durable before the next effect."""

    record: ParticipantRecord


@dataclass(frozen=True, slots=True)
class Delete:
    """Participant: remove the record of ``tx_id`` from the durable store (long after its decision)."""

    tx_id: str


@dataclass(frozen=True, slots=True)
class TxDecided:
    """Report: the log decided ``tx_id`` (emitted by the leader when it applies the decision)."""

    tx_id: str
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class TxEnded:
    """Report: every participant applied the decision of ``tx_id`` and the log forgot it."""

    tx_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class InputError:
    """Report: an input was refused (``code`` is a stable counter name); nothing changed.

    The driver logs it, counts it and writes a dead-letter record; the same
    code is counted in the object's ``errors`` counter.
    """

    code: str
    tx_id: str
    detail: str


Effect = Send | Propose | PrepareResource | ApplyOutcome | Persist | Delete | TxDecided | TxEnded | InputError
