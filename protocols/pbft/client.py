"""The PBFT client: signs a request, sends it to every replica, accepts after f+1 matching replies.

f+1 replies with the same result from distinct replicas include at least one
honest replica, and honest replicas only reply with what they executed.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.pbft.config import PbftConfig
from protocols.pbft.messages import Reply, Request, Signed, decode_frame, encode_body, encode_frame
from protocols.pbft.signing import Signer, Verifier
from schemas.errors import CodecError


@dataclass(frozen=True, slots=True)
class Accepted:
    timestamp: int
    result: bytes
    view: int


class Client:
    """One outstanding request at a time; ``tick`` returns the request again while it is unanswered."""

    def __init__(
        self, config: PbftConfig, signer: Signer, verifier: Verifier, first_timestamp: int = 1,
    ) -> None:
        self.cfg = config
        self.id = signer.identity
        self._signer = signer
        self._verifier = verifier
        self._next_ts = first_timestamp
        self._frame: bytes | None = None
        self._ts = 0
        self._votes: dict[str, bytes] = {}
        self._age = 0
        self.view = 0
        self.dropped = 0

    @property
    def busy(self) -> bool:
        return self._frame is not None

    def _accept_quorum(self) -> int:
        return self.cfg.f + 1

    def submit(self, operation: bytes) -> bytes:
        """The frame to send to every replica."""
        if self._frame is not None:
            raise RuntimeError("a request is still outstanding")
        self._ts = self._next_ts
        self._next_ts += 1
        body = Request(self.id, self._ts, operation)
        raw = encode_body(body)
        self._frame = encode_frame(Signed(raw, self.id, self._signer.sign(raw), body))
        self._votes = {}
        self._age = 0
        return self._frame

    def abandon(self) -> None:
        """Give up on the outstanding request (its timestamp is never reused)."""
        self._frame = None

    def tick(self) -> bytes | None:
        if self._frame is None:
            return None
        self._age += 1
        return self._frame if self._age % self.cfg.client_resend_ticks == 0 else None

    def receive(self, data: bytes) -> Accepted | None:
        try:
            s = decode_frame(data)
        except CodecError:
            self.dropped += 1
            return None
        if not isinstance(s, Signed) or not isinstance(s.msg, Reply):
            self.dropped += 1
            return None
        m = s.msg
        if (
            s.signer not in self.cfg.replicas or m.client != self.id
            or not self._verifier.verify(s.signer, s.body, s.signature)
        ):
            self.dropped += 1
            return None
        if self._frame is None or m.timestamp != self._ts:
            return None  # a late reply to an accepted request
        self._votes[s.signer] = m.result
        self.view = max(self.view, m.view)
        matching = sum(1 for r in self._votes.values() if r == m.result)
        if matching >= self._accept_quorum():
            self._frame = None
            return Accepted(m.timestamp, m.result, m.view)
        return None
