"""Byzantine replicas for the simulator: each a Replica that lies in one specific way.

They draw from the simulator's seeded PRNG, so a run still replays from its
seed. ``BEHAVIOURS`` maps the names the simulator's config uses to the classes.
"""

from __future__ import annotations

from protocols.pbft.config import PbftConfig
from protocols.pbft.messages import (
    Checkpoint,
    Commit,
    Evidence,
    Header,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    Signed,
    batch_digest,
    encode_body,
    encode_frame,
)
from protocols.pbft.output import Durable, Send
from protocols.pbft.replica import Replica
from protocols.pbft.signing import Signer, Verifier
from protocols.pbft.state_machine import ReplicatedStateMachine
from protocols.sim.prng import SplitMix64


class Byzantine(Replica):
    """Base: an honest replica plus a PRNG and the ids of everyone it might lie to."""

    def __init__(
        self, config: PbftConfig, sm: ReplicatedStateMachine, signer: Signer, verifier: Verifier,
        rng: SplitMix64, clients: tuple[str, ...], durable: Durable | None = None,
    ) -> None:
        super().__init__(config, sm, signer, verifier, durable)
        self.rng = rng
        self.clients = clients
        self._key = signer

    def others(self) -> list[str]:
        return [r for r in self.cfg.replicas if r != self.id]

    def raw(self, dst: str | None, frame: bytes) -> None:
        self._out.sends.append(Send(dst, frame))

    def forge(self, body: Request | Header | Prepare | Commit | Checkpoint | Reply, claim: str) -> Signed:
        """A record claiming to be from ``claim`` but signed with this replica's own key."""
        raw = encode_body(body)
        return Signed(raw, claim, self._key.sign(raw), body)


class EquivocatingPrimary(Byzantine):
    """As primary, sends one batch to some backups and a different one (same slot) to the rest."""

    def _emit_pre_prepare(self, seq: int, batch: tuple[Signed, ...], digest: bytes) -> None:
        others = self.rng.shuffled(self.others())
        cut = 1 + self.rng.below(len(others) - 1)
        alt = batch[:-1] if len(batch) > 1 else ()
        real = PrePrepare(self._sign(Header(self.view, seq, digest)), batch)
        fake = PrePrepare(self._sign(Header(self.view, seq, batch_digest(alt))), alt)
        self._slot(seq).pp[self.view] = real
        for i, r in enumerate(others):
            self.raw(r, encode_frame(real if i < cut else fake))

    def _resend(self) -> None:  # keeps telling each backup its own version
        super()._resend()


class SilentPrimary(Byzantine):
    """Never proposes and never sends a new-view: a primary that is alive but does nothing."""

    def _propose(self) -> None:
        return

    def _maybe_new_view(self) -> None:
        return


class Replayer(Byzantine):
    """Honest, but also sends old frames it received (any sender's) again, to anyone, at random."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.recorded: list[bytes] = []

    def receive(self, data: bytes) -> None:
        if len(self.recorded) < 2000 and self.rng.chance(0.3):
            self.recorded.append(data)
        super().receive(data)

    def tick(self) -> None:
        super().tick()
        if self.recorded and self.rng.chance(0.5):
            for _ in range(3):
                self.raw(self.rng.choice(self.others()), self.rng.choice(self.recorded))


class Forger(Byzantine):
    """Honest, but also sends records claiming other signers, unknown keys, fake replies and fake evidence."""

    def tick(self) -> None:
        super().tick()
        if not self.rng.chance(0.3):
            return
        victim = self.rng.choice(self.others())
        digest = batch_digest(())
        seq = self.last_exec + 1 + self.rng.below(3)
        choice = self.rng.below(7)
        if choice == 0:  # a pre-prepare in the primary's name
            hdr = self.forge(Header(self.view, seq, digest), self.primary)
            self.raw(None, encode_frame(PrePrepare(hdr, ())))
        elif choice == 1:  # commits in everyone's name
            for r in self.others():
                self.raw(None, encode_frame(self.forge(Commit(self.view, seq, digest), r)))
        elif choice == 2:  # a checkpoint in someone else's name
            self.raw(None, encode_frame(self.forge(Checkpoint(seq, digest), victim)))
        elif choice == 3 and self.clients:  # a request in a client's name
            c = self.rng.choice(self.clients)
            req = self.forge(Request(c, 10**9, b'{"key":"k0","value":"forged"}'), c)
            self.raw(None, encode_frame(req))
        elif choice == 4 and self.clients:  # its own validly signed but false reply
            c = self.rng.choice(self.clients)
            for ts in range(1, 40):
                body = Reply(self.view, c, ts, b'{"forged":true}')
                raw = encode_body(body)
                self.raw(c, encode_frame(Signed(raw, self.id, self._key.sign(raw), body)))
        elif choice == 5:  # evidence that frames an honest replica
            a = self.forge(Commit(self.view, seq, digest), victim)
            b = self.forge(Commit(self.view, seq, bytes(32)), victim)
            self.raw(None, encode_frame(Evidence(a, b)))
        else:  # a key nobody configured
            commit = Commit(self.view, seq, digest)
            raw = encode_body(commit)
            self.raw(None, encode_frame(Signed(raw, "mallory", self._key.sign(raw), commit)))


class GarbageSender(Byzantine):
    """Honest, but also sends random bytes, truncated and bit-flipped frames and oversized batches."""

    def drain(self):  # type: ignore[no-untyped-def]
        out = super().drain()
        extra: list[Send] = []
        for s in out.sends:
            if self.rng.chance(0.2) and s.frame:
                b = bytearray(s.frame)
                if self.rng.chance(0.5):
                    b = b[: self.rng.below(len(b))]
                else:
                    i = self.rng.below(len(b))
                    b[i] ^= 1 << self.rng.below(8)
                extra.append(Send(s.dst, bytes(b)))
        if self.rng.chance(0.1):
            extra.append(Send(None, bytes(self.rng.below(256) for _ in range(self.rng.between(0, 64)))))
        if self.rng.chance(0.05):  # an oversized batch from a primary that is not one
            reqs = tuple(self.forge(Request("c0", i, b"x"), "c0") for i in range(self.cfg.batch_max + 5))
            hdr = self._sign(Header(self.view, self.last_exec + 1, batch_digest(reqs)))
            extra.append(Send(None, encode_frame(PrePrepare(hdr, reqs))))
        out.sends.extend(extra)
        return out


BEHAVIOURS: dict[str, type[Byzantine]] = {
    "equivocating-primary": EquivocatingPrimary,
    "silent-primary": SilentPrimary,
    "replayer": Replayer,
    "forger": Forger,
    "garbage": GarbageSender,
}
PRIMARY_BEHAVIOURS = ("equivocating-primary", "silent-primary")
