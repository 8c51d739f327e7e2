"""Signed BFT group files for tests, made the fleet's way (edge-flash keys init, edge-bus bft sign)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from broker.bft import sign_group
from broker.bft.group import load_private_key
from broker.trust import load_trusted
from firmware_tools.keys import init_keys
from protocols.ota.trust import KeyRing, TrustedKey

OPERATOR = "operator"


def make_group(tmp: Path, replicas: Sequence[str], clients: Sequence[str], *, name: str = "fleet",
               extra: Mapping[str, object] | None = None) -> Path:
    """Keys per identity, one trusted-keys file, the group file and its signature by the operator's key.

    The trust root is ``trust_root(tmp)`` (the operator's keys directory).
    """
    kids: dict[str, str] = {}
    ring: list[TrustedKey] = []
    for ident in (*replicas, *clients):
        if not (tmp / "keys" / ident).exists():
            init_keys(tmp / "keys" / ident)
        ring += load_trusted(tmp / "keys" / ident).keys
        kids[ident] = ring[-1].id
    (tmp / "trusted_keys.json").write_bytes(KeyRing(tuple(ring)).to_bytes())
    doc = {"group": name, "replicas": list(replicas), "keys": kids, "trusted_keys": "trusted_keys.json",
           "tick_ms": 10, "view_change_ms": 500, "resend_ms": 50, **(extra or {})}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc))
    if not trust_root(tmp).exists():
        init_keys(trust_root(tmp))
    sign_group(path, load_private_key(trust_root(tmp)))
    return path


def trust_root(tmp: Path) -> Path:
    return tmp / "keys" / OPERATOR
