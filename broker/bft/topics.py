"""The BFT group's topics: ``{root}/_sys/bft/{group}/...`` (schemas/FORMAT.md, "Byzantine agreement")."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import validate_name


@dataclass(frozen=True, slots=True)
class BftTopics:
    root: str
    group: str

    def __post_init__(self) -> None:
        validate_name(self.group, "group")

    @property
    def base(self) -> str:
        return f"{self.root}/_sys/bft/{self.group}"

    def inbox(self, identity: str) -> str:
        """Frames for one replica or client (a broadcast is one publish per replica inbox)."""
        return f"{self.base}/to/{validate_name(identity, 'identity')}"

    @property
    def evidence(self) -> str:
        """Equivocation proofs, as PBFT evidence frames anyone can verify alone."""
        return f"{self.base}/evidence"

    def dead_letter(self, replica: str) -> str:
        """JSON records of frames a replica refused (rate-limited; the status keeps the full counts)."""
        return f"{self.base}/deadletter/{validate_name(replica, 'identity')}"

    def quarantined(self, replica: str) -> str:
        """JSON events: this replica quarantined an offender (with the evidence), once per offender."""
        return f"{self.base}/quarantined/{validate_name(replica, 'identity')}"

    def status(self, replica: str) -> str:
        """Retained JSON: view, primary, stable checkpoint, quarantined replicas with their evidence."""
        return f"{self.base}/status/{validate_name(replica, 'identity')}"

    @property
    def decided(self) -> str:
        """Retained JSON by the coordinator: the decided state it follows (coordinator/fleet_decisions.py)."""
        return f"{self.base}/decided"

    @property
    def all_status(self) -> str:
        return f"{self.base}/status/+"
