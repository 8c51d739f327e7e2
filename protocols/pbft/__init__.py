"""PBFT (Castro and Liskov): Byzantine agreement as a pure state machine, with equivocation proofs.

``Replica`` orders client requests for a :class:`ReplicatedStateMachine`
(:class:`DecisionLog`: first value wins; :class:`FleetDecisionLog`: decided by a quorum
of proposers); ``Client`` accepts a result after f+1
matching replies. Frames are bytes in and bytes out (``messages``), signed
through the small ``signing`` interface. The MQTT driver lives in broker/bft.
"""

from protocols.pbft.client import Accepted, Client
from protocols.pbft.config import PbftConfig
from protocols.pbft.evidence import conflicts, offender
from protocols.pbft.fleet_log import Decision, FleetDecisionLog
from protocols.pbft.messages import Evidence, decode_frame, encode_frame
from protocols.pbft.output import (
    Dropped,
    Durable,
    Executed,
    Output,
    Quarantined,
    ReplicaStatus,
    Send,
    StateInstalled,
    ViewEntered,
)
from protocols.pbft.replica import Replica
from protocols.pbft.signing import Ed25519Signer, Ed25519Verifier, Signer, SimKeys, Verifier
from protocols.pbft.state_machine import DecisionLog, ReplicatedStateMachine

__all__ = [
    "Accepted", "Client", "Decision", "DecisionLog", "Dropped", "Durable", "Ed25519Signer", "Ed25519Verifier",
    "Evidence", "Executed", "FleetDecisionLog", "Output", "PbftConfig", "Quarantined", "Replica",
    "ReplicaStatus", "ReplicatedStateMachine",
    "Send", "Signer", "SimKeys", "StateInstalled", "Verifier", "ViewEntered", "conflicts", "decode_frame",
    "encode_frame", "offender",
]
