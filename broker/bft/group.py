"""A BFT group's configuration file: replicas, clients and their keys (strict: unknown keys are errors).

    {"group": "fleet",
     "replicas": ["gw-1", "gw-2", "gw-3", "gw-4"],          # primary order; n >= 3f+1
     "keys": {"gw-1": "<key id>", ..., "coordinator": "<key id>"},
     "trusted_keys": "trusted_keys.json",                  # relative to this file
     "tick_ms": 10, "view_change_ms": 300, "checkpoint_interval": 8, "window": 32, "batch_max": 32,
     "state_machine": "decision_log",                      # or "fleet_log" (protocols/pbft/fleet_log.py)
     "decision_quorum": 2}                                 # fleet_log: distinct proposers per decision

Every identity signs with an Ed25519 key made by ``edge-flash keys init`` (its
``signing.key``); ``keys`` binds each identity to a key id, and the public keys
come from a ``trusted_keys.json`` read by :func:`broker.trust.load_trusted`
(the fleet's usual trusted-key file). Identities in ``keys`` that are not
replicas are the group's clients. The file is trusted configuration: it is
read only with a valid ``<file>.sig`` from a key in the trust root
(:mod:`broker.bft.group_signature`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.bft.group_signature import verify_group
from broker.trust import load_trusted
from protocols.pbft import (
    DecisionLog,
    Ed25519Signer,
    Ed25519Verifier,
    FleetDecisionLog,
    PbftConfig,
    ReplicatedStateMachine,
)
from schemas.errors import ConfigError

_KNOWN = {
    "group", "replicas", "keys", "trusted_keys", "tick_ms", "view_change_ms", "resend_ms",
    "checkpoint_interval", "window", "batch_max", "max_inflight", "state_machine", "decision_quorum",
}
STATE_MACHINES = ("decision_log", "fleet_log")
PRIVATE_KEY = "signing.key"


@dataclass(frozen=True, slots=True)
class BftGroup:
    name: str
    pbft: PbftConfig
    verifier: Ed25519Verifier
    clients: tuple[str, ...]
    tick_ms: int
    state_machine: str = "decision_log"
    decision_quorum: int = 2

    def new_state_machine(self) -> ReplicatedStateMachine:
        """A fresh instance of the group's state machine (every replica runs the same one)."""
        if self.state_machine == "fleet_log":
            return FleetDecisionLog(self.decision_quorum)
        return DecisionLog()


def _int(doc: dict[str, Any], key: str, default: int, where: str) -> int:
    v = doc.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{where}: {key!r} must be a positive integer, got {v!r}")
    return v


def load_group(path: Path, trust: Path) -> BftGroup:
    """Read and check a signed group file; a :class:`ConfigError` names the key that is wrong.

    ``trust`` is the fleet's ``trusted_keys.json`` (or keys directory) the signature must verify against.
    """
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read BFT group file {where}: {exc}") from exc
    verify_group(path, raw, trust)  # the bytes checked are the bytes parsed
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"cannot read BFT group file {where}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a BFT group file is a JSON object")
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_KNOWN)}")
    for key in ("group", "replicas", "keys", "trusted_keys"):
        if key not in doc:
            raise ConfigError(f"{where}: {key!r} is required")
    replicas, keys = doc["replicas"], doc["keys"]
    if not isinstance(replicas, list) or not all(isinstance(r, str) for r in replicas):
        raise ConfigError(f"{where}: 'replicas' must be a list of identities")
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(f"{where}: 'keys' must map identities to key ids")
    missing = [r for r in replicas if r not in keys]
    if missing:
        raise ConfigError(f"{where}: 'keys' has no key for replica(s) {missing}")
    ring = load_trusted(path.parent / str(doc["trusted_keys"]))
    public = {}
    for ident, kid in keys.items():
        found = ring.find(kid)
        if found is None:
            raise ConfigError(f"{where}: key {kid!r} of {ident!r} is not in {doc['trusted_keys']}")
        public[ident] = found.public_key
    tick = _int(doc, "tick_ms", 10, where)
    try:
        cfg = PbftConfig(
            tuple(replicas), checkpoint_interval=_int(doc, "checkpoint_interval", 8, where),
            window=_int(doc, "window", 32, where), batch_max=_int(doc, "batch_max", 32, where),
            max_inflight=_int(doc, "max_inflight", 2, where),
            view_change_ticks=max(1, _int(doc, "view_change_ms", 300, where) // tick),
            resend_ticks=max(1, _int(doc, "resend_ms", 100, where) // tick),
            client_resend_ticks=max(1, 2 * _int(doc, "resend_ms", 100, where) // tick),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    clients = tuple(sorted(i for i in keys if i not in replicas))
    sm = doc.get("state_machine", "decision_log")
    if sm not in STATE_MACHINES:
        raise ConfigError(f"{where}: 'state_machine' must be one of {STATE_MACHINES}, got {sm!r}")
    quorum = _int(doc, "decision_quorum", 2, where)
    if sm == "fleet_log" and quorum > len(clients):
        raise ConfigError(f"{where}: 'decision_quorum' {quorum} is more than the group's {len(clients)} "
                          "client(s): nothing could ever be decided")
    return BftGroup(str(doc["group"]), cfg, Ed25519Verifier(public), clients, tick, sm, quorum)


def load_private_key(key_path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key of an ``edge-flash keys`` directory (or its ``signing.key``)."""
    path = key_path / PRIVATE_KEY if key_path.is_dir() else key_path
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key


def load_signer(identity: str, key_path: Path) -> Ed25519Signer:
    """The signer for ``identity`` from an ``edge-flash keys`` directory (or its ``signing.key``)."""
    return Ed25519Signer(identity, load_private_key(key_path))
