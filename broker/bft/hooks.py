"""Quarantine hooks: what the broker side does when a replica is proven a liar.

A hook is ``hook(replica_id, evidence)``; ``edge-bus bft serve --on-quarantine
MODULE:FUNCTION`` loads one by name so a deployment can plug in its response
(revoking the liar's broker credentials, paging someone) without the replica
knowing about it. The replica also logs a warning and publishes a JSON event
on ``{root}/_sys/bft/{group}/quarantined/{replica}`` whatever the hooks do.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocols.pbft import Evidence
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from broker.revocation import DeviceRevoker

__all__ = ["QuarantineHook", "load_hook", "revocation_hook"]

logger = logging.getLogger(__name__)

QuarantineHook = Callable[[str, Evidence], None]


def load_hook(spec: str) -> QuarantineHook:
    """``"package.module:function"`` -> that callable; ConfigError naming what is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--on-quarantine {spec!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--on-quarantine {spec!r}: cannot import {module_name}: {exc}") from exc
    hook = getattr(module, attr, None)
    if not callable(hook):
        raise ConfigError(f"--on-quarantine {spec!r}: {module_name} has no function {attr!r}")
    return hook  # type: ignore[no-any-return]


def revocation_hook(revoker: DeviceRevoker, group: str) -> QuarantineHook:
    """A hook that takes the proven liar's broker login away (``edge-bus bft serve --revoke-site``).

    Replica ids are device ids, so the liar's id is the user to revoke; the
    reason names the group so the audit record says where the proof came from.
    """
    reason = f"PBFT equivocation proof, group {group}"[:64]

    def revoke(replica_id: str, evidence: Evidence) -> None:
        del evidence  # published on the evidence topic by the replica; the revocation needs only who
        entry = revoker.revoke_device(replica_id, reason)
        logger.warning("revoked the broker login of %s: %s", entry.device, entry.reason)

    return revoke
