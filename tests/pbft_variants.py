"""Deliberately broken PBFT replicas and clients: each must be caught by one of the checkers."""

from __future__ import annotations

from protocols.pbft.client import Client
from protocols.pbft.messages import Evidence, Request, Signed
from protocols.pbft.replica import Replica


class SmallQuorums(Replica):
    """Prepared with 2f-1 prepares (2f with the pre-prepare) and committed with 2f commits."""

    def _prepare_quorum(self) -> int:
        return 2 * self.cfg.f - 1

    def _commit_quorum(self) -> int:
        return 2 * self.cfg.f


class TrustsSignatures(Replica):
    """Never checks a signature: anyone can speak for anyone."""

    def _check_signature(self, s: Signed) -> bool:
        return True


class IgnoresEvidence(Replica):
    """Sees the contradiction and does nothing about it."""

    def _quarantine(self, liar: str, ev: Evidence) -> None:
        return


class NeverChangesView(Replica):
    """Waits for the primary forever."""

    def _start_view_change(self, target: int) -> None:
        return


class ExecutesDuplicates(Replica):
    """Forgets exactly-once: a request proposed again after a view change runs again."""

    def _already_executed(self, req: Request) -> bool:
        return False


class CredulousClient(Client):
    """Accepts the first reply it gets."""

    def _accept_quorum(self) -> int:
        return 1
