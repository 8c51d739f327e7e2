"""What a simulated two-phase commit run did, recorded for the checkers to judge afterwards."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from protocols.twopc.messages import Outcome


@dataclass(frozen=True, slots=True)
class DecisionSent:
    """A manager sent ``outcome`` of ``tx_id`` to ``to`` at ``time``."""

    time: int
    node: str
    to: str
    tx_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class VoteSent:
    time: int
    participant: str
    incarnation: int
    tx_id: str
    yes: bool


@dataclass(frozen=True, slots=True)
class ResourceApplied:
    """Participant ``participant``'s resource carried out ``outcome`` of ``tx_id`` at ``time``."""

    time: int
    participant: str
    tx_id: str
    outcome: Outcome
    was_prepared: bool


@dataclass(frozen=True, slots=True)
class FinalState:
    """The state once the calm phase is over (the liveness checker reads it)."""

    open_in_log: tuple[str, ...]  # begun and not ended in the most advanced replica's table
    undecided_in_log: tuple[str, ...]
    in_doubt: tuple[tuple[str, str], ...]  # (participant, tx) prepared with no decision
    resource_prepared: tuple[tuple[str, str], ...]  # (participant, tx) still prepared in the resource
    untold_clients: tuple[str, ...]  # submitted transactions whose client never heard the outcome
    live_group_nodes: int
    live_participants: int


@dataclass
class TwoPcHistory:
    submitted: dict[str, int] = field(default_factory=dict)  # tx -> first BeginRequest time
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tx -> participants (as submitted)
    begun: dict[str, int] = field(default_factory=dict)  # tx -> first time a replica applied its Begin
    decided: dict[str, tuple[Outcome, int]] = field(default_factory=dict)  # first applied decision
    log_conflicts: list[str] = field(default_factory=list)
    decisions_sent: list[DecisionSent] = field(default_factory=list)
    votes: list[VoteSent] = field(default_factory=list)
    applied: list[ResourceApplied] = field(default_factory=list)
    durability: list[str] = field(default_factory=list)  # found when a participant crashed
    client_told: dict[str, tuple[Outcome, int]] = field(default_factory=dict)
    client_conflicts: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # InputError codes reported
    faults: list[tuple[int, str]] = field(default_factory=list)
    calm_at: int = 0
    finished_at: int | None = None  # when, after healing, every transaction had ended everywhere
    final: FinalState | None = None
