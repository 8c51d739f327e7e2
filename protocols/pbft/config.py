"""A PBFT group's shape: who the replicas are and the protocol's knobs, checked when built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PbftConfig:
    """Replica ids in primary order (view ``v`` is led by ``replicas[v % n]``); times are in ticks.

    ``f`` is the number of Byzantine replicas tolerated: ``n >= 3f + 1``. Leaving
    it at 0 means "as many as n allows".
    """

    replicas: tuple[str, ...]
    f: int = 0
    checkpoint_interval: int = 8  # K: a checkpoint every K sequence numbers
    window: int = 32  # L: high watermark = last stable checkpoint + L
    batch_max: int = 16  # requests per pre-prepare
    max_inflight: int = 2  # batches the primary keeps open before it batches what waits
    max_request_bytes: int = 4096
    view_change_ticks: int = 20  # first view-change timeout; doubles with every failed view
    view_change_doublings: int = 3  # ... at most this many times (8x), so a long outage is not paid for later
    resend_ticks: int = 10  # retransmission of this replica's open messages
    client_resend_ticks: int = 15

    def __post_init__(self) -> None:
        n = len(self.replicas)
        if len(set(self.replicas)) != n or any(not r for r in self.replicas):
            raise ValueError(f"replica ids must be distinct and non-empty, got {self.replicas}")
        max_f = (n - 1) // 3
        if self.f == 0:
            object.__setattr__(self, "f", max_f)
        if self.f < 1 or n < 3 * self.f + 1:
            raise ValueError(f"PBFT needs n >= 3f+1 with f >= 1; n={n} allows f <= {max_f}, got f={self.f}")
        if self.checkpoint_interval < 1 or self.window < 2 * self.checkpoint_interval:
            raise ValueError("window must be at least twice the checkpoint interval (L >= 2K)")
        for name in ("batch_max", "max_inflight", "max_request_bytes", "view_change_ticks", "resend_ticks",
                     "client_resend_ticks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.view_change_doublings < 0:
            raise ValueError("view_change_doublings must be >= 0")

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def quorum(self) -> int:
        """2f+1: any two quorums share an honest replica."""
        return 2 * self.f + 1

    def primary(self, view: int) -> str:
        return self.replicas[view % self.n]
