"""Equivocation proofs: what makes two signed statements conflict, and checking a proof alone.

An honest replica signs at most one pre-prepare header, one prepare and one
commit per (view, sequence number), and one state digest per checkpoint. Two
validly signed statements by one signer that share a slot but differ in value
prove the signer lied; anyone holding the signer's public key can check that
without trusting whoever reports it.
"""

from __future__ import annotations

from protocols.pbft.messages import Checkpoint, Commit, Evidence, Header, Prepare, Signed
from protocols.pbft.signing import Verifier

Slot = tuple[str, int, int]


def statement(s: Signed) -> tuple[Slot, bytes] | None:
    """The slot a signed record speaks for and what it says there (records an honest signer never varies)."""
    m = s.msg
    if isinstance(m, Header):
        return ("pre-prepare", m.view, m.seq), m.digest
    if isinstance(m, Prepare):
        return ("prepare", m.view, m.seq), m.digest
    if isinstance(m, Commit):
        return ("commit", m.view, m.seq), m.digest
    if isinstance(m, Checkpoint):
        return ("checkpoint", 0, m.seq), m.state_digest
    return None


def conflicts(a: Signed, b: Signed) -> bool:
    """Same signer, same slot, different value (signatures not checked here)."""
    sa, sb = statement(a), statement(b)
    return a.signer == b.signer and sa is not None and sb is not None and sa[0] == sb[0] and sa[1] != sb[1]


def offender(ev: Evidence, verifier: Verifier) -> str | None:
    """The proven liar, or None when the proof does not hold (bad signature, no conflict)."""
    a, b = ev.first, ev.second
    if not conflicts(a, b):
        return None
    for s in (a, b):
        if not verifier.verify(s.signer, s.body, s.signature):
            return None
    return a.signer
