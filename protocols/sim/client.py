"""Simulated clients: submit commands one at a time, retry on timeouts and redirects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientRequest:
    client_id: str
    request_seq: int
    command: bytes
    node: str


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """``ok``: applied with ``result``; otherwise a redirect to ``leader_hint`` (None: unknown)."""

    client_id: str
    request_seq: int
    ok: bool
    result: bytes = b""
    leader_hint: str | None = None


@dataclass(slots=True)
class SimClient:
    """One outstanding command at most; the same seq is retried until acknowledged."""

    id: str
    target: str
    seq: int = 0
    pending: bytes | None = None
    attempt: int = 0
    acked: int = 0

    def next_command(self) -> ClientRequest:
        self.seq += 1
        self.attempt = 0
        self.pending = f"{self.id}#{self.seq}".encode()
        return ClientRequest(self.id, self.seq, self.pending, self.target)

    def retry(self, target: str) -> ClientRequest:
        assert self.pending is not None
        self.target = target
        self.attempt += 1
        return ClientRequest(self.id, self.seq, self.pending, target)
