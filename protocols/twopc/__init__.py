"""Two-phase commit that does not block: the decision log is the Raft group's replicated log.

* :class:`TxTable` is the decision log, a deterministic state machine the Raft
  group replicates (presumed abort, first decision wins, commit only with every
  yes vote); its commands are in :mod:`protocols.twopc.commands`.
* :class:`TxManager` is the leader-side logic; any node that becomes leader
  finishes every transaction the log holds, so a prepared participant waits for
  a majority of the group, never for one coordinator.
* :class:`Participant` wraps one resource: durable prepare before a yes vote,
  decisions only from the group, in-doubt queries after a restart.
* :mod:`protocols.twopc.messages` holds the wire records; :mod:`protocols.twopc.sim`
  the seeded simulator and :mod:`protocols.twopc.checkers` its invariants.

See ``protocols/twopc/README.md`` for the driver contract.
"""

from protocols.twopc.commands import Begin, Decide, End, Resolve, TxCommand, decode_entry, encode_entry
from protocols.twopc.effects import (
    ApplyOutcome,
    Delete,
    Effect,
    InputError,
    Persist,
    PrepareResource,
    Propose,
    Send,
    TxDecided,
    TxEnded,
)
from protocols.twopc.manager import ManagerConfig, TxManager
from protocols.twopc.messages import (
    Ack,
    BeginRequest,
    Decision,
    Outcome,
    Part,
    Prepare,
    StatusQuery,
    StatusReply,
    TxMessage,
    TxState,
    Vote,
    decode_message,
    encode_message,
)
from protocols.twopc.participant import Participant, ParticipantConfig
from protocols.twopc.records import ParticipantRecord, decode_participant_record, encode_participant_record
from protocols.twopc.table import (
    TxRecord,
    TxResult,
    TxStateMachine,
    TxStatus,
    TxTable,
    decode_result,
    encode_result,
)

__all__ = [
    "Ack",
    "ApplyOutcome",
    "Begin",
    "BeginRequest",
    "Decide",
    "Decision",
    "Delete",
    "Effect",
    "End",
    "InputError",
    "ManagerConfig",
    "Outcome",
    "Part",
    "Participant",
    "ParticipantConfig",
    "ParticipantRecord",
    "Persist",
    "Prepare",
    "PrepareResource",
    "Propose",
    "Resolve",
    "Send",
    "StatusQuery",
    "StatusReply",
    "TxCommand",
    "TxDecided",
    "TxEnded",
    "TxManager",
    "TxMessage",
    "TxRecord",
    "TxResult",
    "TxState",
    "TxStateMachine",
    "TxStatus",
    "TxTable",
    "Vote",
    "decode_entry",
    "decode_message",
    "decode_participant_record",
    "decode_result",
    "encode_entry",
    "encode_message",
    "encode_participant_record",
    "encode_result",
]
