"""Who signed what: a small signer/verifier interface, Ed25519 for real, a keyed hash for the simulator.

The replica core only calls ``sign(data)`` and ``verify(signer, data, sig)``;
both are deterministic, so a simulated run still replays from its seed.
:class:`SimKeys` is a fast stand-in for thousands of simulated runs: each
party's key is a secret only the simulator's key table holds, so a Byzantine
replica in the simulation can no more forge an honest one's signature than
with Ed25519 (the forger tests check exactly that).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class Signer(Protocol):
    """Signs as one identity."""

    @property
    def identity(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    """Knows the public keys of a group's replicas and clients."""

    def knows(self, identity: str) -> bool: ...

    def verify(self, identity: str, data: bytes, signature: bytes) -> bool: ...


class Ed25519Signer:
    def __init__(self, identity: str, key: Ed25519PrivateKey) -> None:
        self._identity = identity
        self._key = key

    @property
    def identity(self) -> str:
        return self._identity

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class Ed25519Verifier:
    """Public keys bound to device identities (from the group's signed configuration)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    def knows(self, identity: str) -> bool:
        return identity in self._keys

    def verify(self, identity: str, data: bytes, signature: bytes) -> bool:
        key = self._keys.get(identity)
        if key is None or len(signature) != 64:
            return False
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class SimKeys:
    """The simulator's key table: HMAC-SHA256 under a per-identity secret derived from the run's seed."""

    def __init__(self, identities: list[str], seed: int) -> None:
        self._secrets = {
            i: hashlib.sha256(f"pbft-sim:{seed}:{i}".encode()).digest() for i in identities
        }

    def signer(self, identity: str) -> SimSigner:
        return SimSigner(identity, self._secrets[identity])

    def knows(self, identity: str) -> bool:
        return identity in self._secrets

    def verify(self, identity: str, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(identity)
        if secret is None:
            return False
        return hmac.compare_digest(hmac.digest(secret, data, "sha256"), signature)


class SimSigner:
    def __init__(self, identity: str, secret: bytes) -> None:
        self._identity = identity
        self._secret = secret

    @property
    def identity(self) -> str:
        return self._identity

    def sign(self, data: bytes) -> bytes:
        return hmac.digest(self._secret, data, "sha256")
